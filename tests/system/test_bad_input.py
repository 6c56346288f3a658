"""Bad input, end to end: a corpus of broken, odd and oversized uploads against the real service.

Every file either gets a 4xx with a stable problem+json ``code`` at upload, or becomes a job that
succeeds or fails with an error ``code``: never a 5xx, never a worker crash, never a retry of a
permanent fault, never a lost job. The corpus is built by ``audio_factory.make_corpus``.
"""

from __future__ import annotations

import time

import httpx
import pytest
import redis

from audio_factory import make_corpus
from harness import running, stored_run

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.timeout(300)]

MAX_UPLOAD_BYTES = 2_000_000
MAX_AUDIO_SECONDS = 20.0
FINISH_TIMEOUT_S = 120  # for the whole corpus; the tiny model scores 3 s of audio in under a second
DURATION_TOLERANCE_S = 0.06
TERMINAL = ("succeeded", "failed", "canceled")


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_model_dir, amqp_url, redis_url):
    with running(tmp_path_factory.mktemp("bad-input"), model=tiny_model_dir, broker=amqp_url, store=redis_url,
                 max_upload_bytes=MAX_UPLOAD_BYTES, max_audio_seconds=MAX_AUDIO_SECONDS) as svc:
        yield svc


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), max_upload_bytes=MAX_UPLOAD_BYTES,
                       max_audio_seconds=MAX_AUDIO_SECONDS)


def _tasks_run(stats: dict) -> int:
    """How many inference tasks the worker had received when ``stats`` were taken."""
    return stats.get("total", {}).get("emotionq.infer", 0)


def _pids(stats: dict) -> tuple[int, list[int]]:
    """The worker's main process and its pool (model-holding) children."""
    return stats["pid"], sorted(stats["pool"]["processes"])


def _upload(service, case) -> tuple[int | None, dict | None, str]:
    """(HTTP status, JSON body, note); status None when the connection failed before an answer."""
    try:
        r = service.submit(case.path)
    except httpx.HTTPError as exc:
        return None, None, f"no HTTP answer: {type(exc).__name__}: {exc}"
    try:
        body = r.json()
    except ValueError:
        return r.status_code, None, f"not JSON ({r.headers.get('content-type')}): {r.text[:200]!r}"
    if r.status_code >= 400 and r.headers.get("content-type") != "application/problem+json":
        return r.status_code, body, f"error as {r.headers.get('content-type')}, not application/problem+json"
    return r.status_code, body, ""


def _observed(status, body, job) -> tuple:
    if status is None or status >= 400:
        return ("rejected", status, (body or {}).get("code"))
    if job is None or job["status"] not in TERMINAL:
        return ("lost", job and job["status"])
    if job["status"] == "failed":
        return ("failed", (job.get("error") or {}).get("code"))
    return (job["status"],)


def test_every_bad_upload_ends_with_a_stable_code_and_nothing_is_lost(service, corpus, redis_url, speech_wav,
                                                                       tmp_path):
    service.wait_ready()
    before = service.inspect("stats")

    uploads = {case.name: _upload(service, case) for case in corpus}
    accepted = {name: body["id"] for name, (status, body, _) in uploads.items()
                if status in (200, 202) and body and "id" in body}
    deadline = time.monotonic() + FINISH_TIMEOUT_S
    finished, unreadable = {}, {}
    for name, job_id in accepted.items():
        try:
            finished[name] = service.finish(job_id, timeout=max(1.0, deadline - time.monotonic()))
        except httpx.HTTPError as exc:  # e.g. a 500 on GET: the job exists but cannot be shown
            unreadable[name] = f"GET /v1/jobs/{job_id} failed: {exc}"

    mismatches, table = [], []
    for case in corpus:
        status, body, note = uploads[case.name]
        job = finished.get(case.name)
        seen = _observed(status, body, job)
        table.append(f"  {case.name:26} expected {case.expect!s:45} observed {seen}")
        problems = [p for p in (note, unreadable.get(case.name)) if p]
        if seen != case.expect:
            detail = (job or {}).get("error") or (body if status is None or status >= 400 else None)
            problems.append(f"expected {case.expect}, observed {seen}: {detail}")
        if status is not None and status >= 500:
            problems.append(f"a {status} answer: {body}")
        if status is not None and 400 <= status < 500 and body and (body.get("retryable") or not body.get("detail")):
            problems.append(f"a rejection must say why and not invite a retry: {body}")
        if job and job["status"] == "failed" and (job["error"]["retryable"] or not job["error"]["message"]):
            problems.append(f"a permanent failure must say why and not be retryable: {job['error']}")
        if job and case.duration_s is not None and job["status"] in ("succeeded", "failed"):
            got = job["input"]["duration_s"]
            if abs(got - case.duration_s) > DURATION_TOLERANCE_S:
                problems.append(f"input.duration_s {got}, expected {case.duration_s}")
        if job and job["status"] == "succeeded" and job["dedup"]["reused"]:
            problems.append(f"joined an earlier run ({job['dedup']}): the corpus must be unique bytes")
        mismatches += [f"{case.name}: {p}" for p in problems]
    assert not mismatches, "\n".join(["mismatches:", *mismatches, "all cases:", *table])

    # The totals, exactly: every upload is rejected or accepted, every accepted job finished.
    n = len(corpus)
    rejected = [c for c in corpus if c.outcome == "rejected"]
    succeeded = [c for c in corpus if c.outcome == "succeeded"]
    failed = [c for c in corpus if c.outcome == "failed"]
    assert len(uploads) == n
    assert sum(s is not None and s >= 400 for s, _, _ in uploads.values()) == len(rejected)
    assert len(accepted) == n - len(rejected) == len(succeeded) + len(failed)
    assert sum(j["status"] == "succeeded" for j in finished.values()) == len(succeeded)
    assert sum(j["status"] == "failed" for j in finished.values()) == len(failed)
    assert [name for name, j in finished.items() if j["status"] not in TERMINAL] == []  # lost: none
    assert len(rejected) >= 10 and len(succeeded) >= 10 and len(failed) >= 4  # the corpus covers each outcome

    # No worker crashed: the same processes served the whole corpus.
    after = service.inspect("stats")
    assert _pids(after) == _pids(before), service.log("worker")[-3000:]
    # Each run was delivered once and never retried (jobs waiting together are scored in one Celery
    # task, so the store's records count, not the task total).
    store = redis.Redis.from_url(redis_url)
    for name, job in finished.items():
        run = stored_run(store, job["dedup"]["run_id"])
        assert (run.deliveries, run.retries) == (1, 0), (name, run)
    assert 0 < _tasks_run(after) - _tasks_run(before) <= len(accepted)
    worker_log = service.log("worker")
    for sign in ("unexpected error", "WorkerLostError", "Retry in"):
        assert sign not in worker_log, worker_log[-3000:]

    # And the worker still serves: a normal recording after the corpus.
    from audio_factory import distinct_clips

    [clip] = distinct_clips(speech_wav, tmp_path, 1)
    r = service.submit(clip)
    assert r.status_code == 202, r.text
    assert service.finish(r.json()["id"])["status"] == "succeeded"
