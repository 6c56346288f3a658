"""The object store (SeaweedFS) crashes under load and comes back: every upload is 202 and later
succeeded, or 503 ``blob_store_unavailable`` with Retry-After; workers that could not fetch wait the
outage out and resume. Nothing accepted is lost.

The worker starts only once the object store is down, with accepted jobs waiting, and the store
comes back only once the worker has met the outage: a fast worker that had drained every job before
the crash would otherwise never see it (that made the test depend on the machine's speed)."""

from __future__ import annotations

import threading
import time

import pytest

from audio_factory import distinct_clips, make_speech
from harness import fresh_redis_db, running
from servers import PrivateSeaweedFS

pytestmark = [pytest.mark.slow, pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.s3, pytest.mark.timeout(600)]

SUBMITTERS = 3
PAUSE_S = 0.4
DOWN_S = 2.0  # the outage goes on this long after the worker first met it
BEFORE_FAULT = 8


def test_an_object_store_outage_loses_no_accepted_job(tmp_path, tiny_model_dir):
    speech = make_speech(tmp_path / "speech.wav", seconds=1.5)
    clips = iter(distinct_clips(speech, tmp_path, 60))
    accepted, refused, unexpected = [], [], []
    after_fault, faulted, stop, lock = [], threading.Event(), threading.Event(), threading.Lock()
    with PrivateSeaweedFS(tmp_path) as s3, running(tmp_path, model=tiny_model_dir, store=fresh_redis_db(5),
                                                   s3_timeout_s=2, blob_patience_s=20, worker=False,
                                                   **s3.settings()) as svc:
        def submitter() -> None:  # sends its clips in turn, each again while it is refused, as a client would
            clip = None
            while not stop.is_set():
                with lock:
                    clip = clip or next(clips, None)
                if clip is None:
                    return
                try:
                    r = svc.submit(clip)
                except Exception as exc:  # noqa: BLE001 - a hang or a dropped connection counts against us
                    unexpected.append(repr(exc))
                    clip = None
                    continue
                with lock:
                    if r.status_code == 202:
                        accepted.append(r.json()["id"])
                        if faulted.is_set():
                            after_fault.append(r.json()["id"])
                        clip = None
                    elif r.status_code == 503 and r.headers.get("retry-after"):
                        refused.append(r.json()["code"])
                    else:
                        unexpected.append(f"{r.status_code} {r.text}")
                        clip = None
                time.sleep(PAUSE_S)

        threads = [threading.Thread(target=submitter) for _ in range(SUBMITTERS)]
        for t in threads:
            t.start()
        _until(lambda: len(accepted) >= BEFORE_FAULT, "too few uploads accepted before the outage")
        s3.stop(kill=True)
        backlog = len(accepted)
        svc.start_worker()
        _until(lambda: "object store unavailable, retrying" in svc.log("worker"), "the worker never met the outage")
        time.sleep(DOWN_S)
        s3.start()
        faulted.set()
        _until(lambda: len(after_fault) >= 3, "no upload accepted after the object store came back")
        stop.set()
        for t in threads:
            t.join(timeout=60)
        outcomes = [svc.finish(job_id, timeout=180)["status"] for job_id in accepted]
    print(f"\nobject store down with {backlog} accepted: {len(accepted)} accepted, "
          f"{len(refused)} refused with 503")
    assert unexpected == []
    assert refused and set(refused) == {"blob_store_unavailable"}
    assert outcomes == ["succeeded"] * len(accepted)  # the worker that met the outage waited it out


def _until(condition, message: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)
