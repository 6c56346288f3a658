"""Fair share on the real RabbitMQ: within a priority clients take turns, so a client's backlog of
200 jobs delays another client's jobs by about one round of the clients with work, not by 200."""

from __future__ import annotations

import concurrent.futures
from datetime import datetime

import pytest

from audio_factory import distinct_clips
from harness import fresh_redis_db, running

pytestmark = [pytest.mark.slow, pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.timeout(600)]

BACKLOG, FEW = 200, 5


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _submit_all(http, clips):
    def one(path):
        with open(path, "rb") as f:
            return http.post("/v1/jobs", files={"file": (path.name, f)}, data={"priority": "low"})

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(one, clips))
    assert all(r.status_code == 202 for r in responses), [r.text for r in responses if r.status_code != 202]
    return [r.json()["id"] for r in responses]


def _finish(http, job_id):
    for _ in range(20):
        job = http.get(f"/v1/jobs/{job_id}", headers={"Prefer": "wait=30"}, timeout=60).json()
        if job["status"] not in ("queued", "running"):
            return job
    raise AssertionError(f"{job_id} did not finish")


def test_a_small_client_is_not_stuck_behind_a_big_backlog(tmp_path, tiny_model_dir, redis_url, speech_wav):
    clips = distinct_clips(speech_wav, tmp_path, BACKLOG + FEW)
    with running(tmp_path, model=tiny_model_dir, store=fresh_redis_db(3), worker=False,
                 batch_size=1) as service:  # a database of its own: no other test's waiting jobs take turns
        a, b = service.as_client("client-a"), service.as_client("client-b")
        a_jobs = _submit_all(a, clips[:BACKLOG])
        b_jobs = [_submit_all(b, [clip])[0] for clip in clips[BACKLOG:]]  # one by one, in order
        service.start_worker()
        b_done = [_finish(b, j) for j in b_jobs]
        assert {d["status"] for d in b_done} == {"succeeded"}
        a_started = sorted(_ts(s) for j in a_jobs if (s := a.get(f"/v1/jobs/{j}").json()["started_at"]))
    clients_with_work = 2
    for k, job in enumerate(b_done):
        started = _ts(job["started_at"])
        ordinal = sum(1 for t in a_started if t < started) + k + 1  # this job's place in the start order
        assert ordinal <= clients_with_work * (k + 1), f"B's job {k + 1} was start number {ordinal}"
