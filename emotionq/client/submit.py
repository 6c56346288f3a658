"""Scoring a folder of recordings: find the audio, send it with a few threads, one result row per file.

Re-running on the same folder is the way to resume: the API dedupes by audio hash, so files already
scored come back at once from its cache (``dedup: cache``) and only the rest run.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from emotionq import LABELS
from emotionq.client import TERMINAL, Client
from emotionq.errors import APIError

AUDIO_SUFFIXES = frozenset({
    ".aac", ".aif", ".aiff", ".amr", ".au", ".caf", ".flac", ".m4a", ".mka", ".mp3", ".mp4", ".oga", ".ogg",
    ".opus", ".wav", ".webm", ".wma",
})
STOP_CODES = frozenset({"unauthorized", "unreachable"})  # not about one file: stop instead of failing each
CSV_COLUMNS = ("file", "job_id", "status", "dedup", "top_label", "top_score", *LABELS, "error_code", "error")
SEGMENT_COLUMNS = ("file", "channel", "speaker", "start", "end", "label", "score", *LABELS)
TRANSCRIPT_COLUMNS = ("text", "language", "events")  # with --transcript: events as "tag:probability;..."


def audio_files(paths: Iterable[Path]) -> list[Path]:
    """Files named as they are; under a folder, every audio file (by suffix, hidden ones skipped), sorted."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            found.append(path)
            continue
        found.extend(sorted(
            p for p in path.rglob("*")
            if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        ))
    return found


def score(client: Client, files: list[Path], *, priority: str, wait: bool, timeout: float,
          concurrency: int, options: dict[str, str] | None = None) -> Iterator[dict]:
    """One row per file, in the order they finish; a file the API refuses is a row with its error code.
    Each row's ``segments`` are its rows for ``--segments`` (``segment_rows``; not written with the row).

    Raises APIError when the API cannot be reached or refuses the API key, which no file would escape.
    """
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="emotionq-submit")
    try:
        futures = [pool.submit(_one, client, path, priority=priority, wait=wait, timeout=timeout, options=options)
                   for path in files]
        for future in as_completed(futures):
            result, error = future.result()
            if error is not None and error.code in STOP_CODES:
                raise error
            yield result
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C: send nothing more


def _one(client: Client, path: Path, *, priority: str, wait: bool, timeout: float,
         options: dict[str, str] | None) -> tuple[dict, APIError | None]:
    deadline = time.monotonic() + timeout
    job, error = None, None
    try:
        job = client.submit(path, priority=priority, options=options)
        if wait and job["status"] not in TERMINAL:  # follows its events (resumed where they drop)
            job = client.wait(job["id"], timeout=max(0.0, deadline - time.monotonic()))
            if job["status"] not in TERMINAL:
                error = APIError(f"not finished after {timeout:g} s; `emotionq status {job['id']}` shows it later",
                                 code="wait_timeout")
    except APIError as exc:
        error = exc
    except OSError as exc:
        error = APIError(f"cannot read {path}: {exc}", code="unreadable_file")
    return row(path, job, error), error


def row(path: Path, job: dict | None, error: APIError | None = None) -> dict:
    """The result for one file: ``error`` is None exactly when it went well."""
    output = (job or {}).get("output") or {}
    if error is not None:
        problem = {"code": error.code, "message": error.message}
    elif job["status"] == "failed":
        problem = {"code": job["error"]["code"], "message": job["error"]["message"]}
    elif job["status"] == "canceled":
        problem = {"code": "canceled", "message": "the job was canceled"}
    else:
        problem = None
    return {
        "file": str(path),
        "job_id": job["id"] if job else None,
        "status": job["status"] if job else "rejected",
        "dedup": job["dedup"]["source"] if job else None,
        "top_label": output.get("top_label"),
        "top_score": output.get("top_score"),
        "scores": output.get("scores"),
        "error": problem,
        "segments": segment_rows(path, output),
    }


def segment_rows(path: Path, output: dict) -> list[dict]:
    """One row per scored segment of a result (none for a result of fixed windows of the mix, or no speech)."""
    return [{"file": str(path), "channel": s["channel"], "speaker": s.get("speaker"), "start": s["start"],
             "end": s["end"], "label": s["label"], "score": s["score"], "scores": s["scores"],
             **{k: s[k] for k in (*TRANSCRIPT_COLUMNS, "emotion_tag") if k in s}}  # transcript=true
            for s in output.get("segments") or []]


def format_segment(segment: dict, fmt: str, *, transcript: bool = False) -> str:
    """A segment row as one line of JSON, or one CSV record (a column per label; then text, language and
    events with ``transcript``)."""
    if fmt == "jsonl":
        return json.dumps(segment)
    values = [segment[k] for k in SEGMENT_COLUMNS[:7]] + [segment["scores"].get(label) for label in LABELS]
    if transcript:
        values += [segment.get("text", ""), segment.get("language", ""),
                   ";".join(f"{e['tag']}:{e['probability']}" for e in segment.get("events", []))]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(values)
    return buffer.getvalue()


def format_row(result: dict, fmt: str) -> str:
    """One line of JSON, or one CSV record (a column per label) without its line ending."""
    if fmt == "jsonl":
        return json.dumps({k: v for k, v in result.items() if k != "segments"})
    scores = result["scores"] or {}
    error = result["error"] or {}
    values = [result["file"], result["job_id"], result["status"], result["dedup"], result["top_label"],
              result["top_score"], *(scores.get(label) for label in LABELS), error.get("code"), error.get("message")]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(["" if v is None else v for v in values])
    return buffer.getvalue()


def csv_header(columns: tuple[str, ...] = CSV_COLUMNS) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(columns)
    return buffer.getvalue()
