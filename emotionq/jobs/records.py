"""The job store's documents for jobs and runs: keys, ids, the dedup key, and the one place where
``Job`` and ``Run`` are read from and written to the store (their compact JSON documents: see
``emotionq.jobs.domain``; a run's dedup key is written only where it is not the one its audio, model and
options give)."""

from __future__ import annotations

import hashlib
import json
import uuid

from emotionq.jobs.domain import Job, Run
from emotionq.store import Store, Tx


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def dedup_key(*, sha256: str, model: str, options: dict) -> str:
    """The identity of a question: same audio bytes, same model, same options."""
    canon = json.dumps({"audio": sha256, "model": model, "options": options}, sort_keys=True)
    return hashlib.sha256(canon.encode()).hexdigest()


def job_key(job_id: str) -> str:
    return f"job:{job_id}"


def run_key(run_id: str) -> str:
    return f"run:{run_id}"


def dedup_pointer(key: str) -> str:
    return f"dedup:{key}"


def get_run(src: Tx | Store, run_id: str) -> Run | None:
    return run_from_doc(src.get(run_key(run_id)), run_id)


def put_run(tx: Tx, run: Run, *, ttl: int | None = None) -> None:
    tx.put(run_key(run.id), run_doc(run), ttl=ttl)


def run_doc(run: Run) -> dict:
    doc = run.to_doc()
    if run.key != dedup_key(sha256=run.sha256, model=run.model, options=run.options):  # one of an earlier version
        doc["key"] = run.key
    return doc


def get_job(src: Tx | Store, job_id: str) -> Job | None:
    return job_from_doc(src.get(job_key(job_id)), job_id)


def put_job(tx: Tx, job: Job, *, ttl: int | None = None) -> None:
    tx.put(job_key(job.id), job.to_doc(), ttl=ttl)


def run_from_doc(doc: dict | None, run_id: str) -> Run | None:
    """The run stored under ``run_id``, from its document."""
    if doc is None:
        return None
    key = doc.get("key") or dedup_key(sha256=doc["sha256"], model=doc["model"], options=doc["options"])
    return Run.from_doc(doc, id=run_id, key=key)


def job_from_doc(doc: dict | None, job_id: str) -> Job | None:
    return None if doc is None else Job.from_doc(doc, id=job_id)


def pointed_run(doc: dict | None) -> str | None:
    """The run id a dedup pointer names."""
    return None if doc is None else doc["run_id"]


def pointer_doc(run_id: str) -> dict:
    """A dedup pointer to a live run."""
    return {"run_id": run_id}


def result_pointer(run: Run) -> dict:
    """A dedup pointer to a finished result, with what a repeat needs to be checked and answered without
    reading the run first (``emotionq.jobs.submission.reuse``): the audio's duration and channels. Pointers
    without ``succeeded`` (to live runs, and every pointer of earlier versions) are read through their run."""
    return {"run_id": run.id, "succeeded": True, "duration_s": run.duration_s, "channels": run.channels}


def points_to_result(doc: dict | None) -> bool:
    return doc is not None and doc.get("succeeded") is True
