"""The baseline of the upload benchmark: a bare FastAPI endpoint that saves an ``UploadFile`` to disk, as
a user would write it (``python -m uvicorn benchmarks.bare_upload:app``; files go to BARE_UPLOAD_DIR)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from fastapi import FastAPI, UploadFile

DIRECTORY = Path(os.environ.get("BARE_UPLOAD_DIR", "/tmp/bare-upload"))
DIRECTORY.mkdir(parents=True, exist_ok=True)
app = FastAPI()


@app.get("/healthz")
async def healthz():
    return {"status": "ok"}


@app.post("/upload")
async def upload(file: UploadFile):
    path = DIRECTORY / uuid.uuid4().hex
    with path.open("wb") as out:
        shutil.copyfileobj(file.file, out)
    return {"filename": file.filename, "bytes": path.stat().st_size}
