"""Repeats of a finished result answered on the event loop (``Intake.reuse`` through ``submission.reuse``
and ``RedisStore.aio``): the same job as ``submit`` makes, or None where ``submit`` must decide."""

from __future__ import annotations

import asyncio

import pytest
import redis

import harness
from emotionq import jobs
from emotionq.errors import AudioTooLong, Unauthorized
from emotionq.jobs import records, submission
from emotionq.jobs.scheduler import limits
from emotionq.store import open_store
from emotionq.web import keys

pytestmark = pytest.mark.redis
SETTINGS = harness.settings()
OPTS = {"granularity": "utterance", "embedding": False}
ENVELOPE = {"filename": "x.wav", "content_type": "audio/wav", "bytes": 100}


@pytest.fixture
def store():
    s = open_store(harness.fresh_redis_db(14))
    yield s
    s.close()


def _finished(store, sha="a" * 64) -> jobs.Submission:
    first = jobs.submit(store, settings=SETTINGS, client="c1", priority="low", options=OPTS, metadata={},
                        model="m@1", input={**ENVELOPE, "duration_s": 3.0, "channels": 1, "sha256": sha})
    jobs.mark_filed(store, run_id=first.run.id)
    assert jobs.claim(store, run_id=first.run.id, task_id="t1", worker="w", max_deliveries=3, hard_limit_s=60).go
    assert jobs.complete(store, run_id=first.run.id, task_id="t1", output={"top_label": "happy"}, settings=SETTINGS)
    return first


def _reuse(store, *, sha="a" * 64, idem=None, check=lambda d, c: None):
    async def go():
        try:
            return await submission.reuse(
                store.aio, settings=SETTINGS, client="c1", priority="high", sha256=sha, options=OPTS, metadata={},
                model="m@1", idempotency_key=idem, check=check,
                envelope=lambda **audio: {**ENVELOPE, **audio, "sha256": sha})
        finally:
            await store.aio.close()

    return asyncio.run(go())


def test_a_repeat_is_the_job_submit_would_make(store):
    first = _finished(store)
    fast = _reuse(store)
    assert (fast.outcome, fast.publish, fast.run.id) == ("cache", False, first.run.id)
    slow = jobs.submit(store, settings=SETTINGS, client="c1", priority="high", options=OPTS, metadata={},
                       model="m@1", input={**ENVELOPE, "duration_s": 3.0, "channels": 1, "sha256": "a" * 64})
    assert slow.outcome == "cache"
    views = [jobs.view(*jobs.load(store, job_id=s.job.id, client="c1")) for s in (fast, slow)]
    for view in views:
        view.pop("id"), view.pop("created_at"), view.pop("started_at"), view.pop("finished_at")
    assert views[0] == views[1] and list(views[0]["input"]) == list(views[1]["input"])
    assert views[0]["output"] == {"top_label": "happy"} and views[0]["input"]["duration_s"] == 3.0


def test_anything_but_a_plain_repeat_of_a_finished_result_is_left_to_submit(store):
    assert _reuse(store) is None  # nothing known
    first = jobs.submit(store, settings=SETTINGS, client="c1", priority="low", options=OPTS, metadata={},
                        model="m@1", input={**ENVELOPE, "duration_s": 3.0, "channels": 1, "sha256": "a" * 64})
    assert _reuse(store) is None  # a live run: joined in submit's transaction
    _finished(store, sha="b" * 64)
    assert _reuse(store, sha="b" * 64, idem="k1") is not None
    assert _reuse(store, sha="b" * 64, idem="k1") is None  # a repeated Idempotency-Key: submit decides
    pointer = records.dedup_pointer(first.run.key)
    store.transact(lambda tx: tx.put(pointer, {"run_id": first.run.id}))  # as earlier versions wrote it
    assert _reuse(store) is None


def test_a_refused_repeat_writes_nothing(store):
    _finished(store)
    server = redis.Redis.from_url(store.url)
    before = set(server.keys("*"))

    def too_long(duration_s, channels):
        raise AudioTooLong(f"{duration_s} s")

    with pytest.raises(AudioTooLong, match="3.0 s"):
        _reuse(store, check=too_long)
    assert set(server.keys("*")) == before


def test_a_key_and_its_clients_limits_are_one_read(store):
    key, _ = keys.create(store, client="acme")
    limits.set_limits(store, "acme", rate_per_s=5.0)

    async def go(token):
        try:
            return await keys.authenticate_async(store.aio, token, linked=limits.LIMITS_PREFIX)
        finally:
            await store.aio.close()

    assert asyncio.run(go(key)) == ("acme", {"rate_per_s": 5.0})
    other, _ = keys.create(store, client="other")
    assert asyncio.run(go(other)) == ("other", None)
    for bad in (None, "eq_unknown", "not-a-key"):
        with pytest.raises(Unauthorized):
            asyncio.run(go(bad))
