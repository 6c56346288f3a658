"""Job and run logic on both stores: dedup, coalescing, cancellation, claims, idempotency."""

from __future__ import annotations

import threading

import pytest

import harness
from emotionq import jobs
from emotionq.blobs.local import LocalBlobs
from emotionq.errors import Conflict, NotFound, Overloaded
from emotionq.janitor.sweeps import Janitor

SETTINGS = harness.settings()
OPTS = {"granularity": "utterance", "embedding": False}


def _input(sha="a" * 64, duration=3.0):
    return {"filename": "x.wav", "content_type": "audio/wav", "bytes": 100, "duration_s": duration, "sha256": sha}


def _submit(store, *, sha="a" * 64, priority="low", client="c1", options=OPTS, idem=None):
    submission = jobs.submit(store, settings=SETTINGS, client=client, priority=priority, input=_input(sha),
                             options=options, metadata={}, model="m@1", idempotency_key=idem)
    if submission.outcome == "new":  # as the intake does once the audio is in the blob store
        jobs.mark_filed(store, run_id=submission.run.id)
    return submission


def _claim(store, run_id, task="t1", max_deliveries=3):
    return jobs.claim(store, run_id=run_id, task_id=task, worker="w", max_deliveries=max_deliveries,
                      hard_limit_s=60)


def test_new_then_coalesced_then_cached(store):
    first = _submit(store)
    assert (first.outcome, first.publish) == ("new", True)
    second = _submit(store)
    assert (second.outcome, second.publish) == ("coalesced", False)
    assert second.run.id == first.run.id

    assert _claim(store, first.run.id).go
    assert jobs.complete(store, run_id=first.run.id, task_id="t1", output={"top_label": "happy"},
                         settings=SETTINGS)
    for sub in (first, second):
        job, run = jobs.load(store, job_id=sub.job.id, client="c1")
        view = jobs.view(job, run)
        assert view["status"] == "succeeded" and view["output"] == {"top_label": "happy"}

    third = _submit(store)
    assert (third.outcome, third.publish) == ("cache", False)
    view = jobs.view(*jobs.load(store, job_id=third.job.id, client="c1"))
    assert view["status"] == "succeeded"
    assert view["dedup"] == {"reused": True, "source": "cache", "run_id": first.run.id}


def test_different_options_or_audio_run_separately(store):
    a = _submit(store)
    b = _submit(store, options={"granularity": "frame", "embedding": False})
    c = _submit(store, sha="b" * 64)
    assert len({a.run.id, b.run.id, c.run.id}) == 3


def test_concurrent_identical_submissions_make_exactly_one_run(store):
    results, barrier = [], threading.Barrier(12)

    def go():
        barrier.wait()
        results.append(_submit(store))

    threads = [threading.Thread(target=go) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.outcome for r in results).count("new") == 1
    assert len({r.run.id for r in results}) == 1
    assert sum(r.publish for r in results) == 1
    run = store.get(f"run:{results[0].run.id}")
    assert sorted(run["jobs"]) == sorted(r.job.id for r in results)


def _finished(store) -> tuple[str, str]:
    """A run of the default audio that succeeded: its id, and its one job's."""
    first = _submit(store)
    run_id = first.run.id
    assert _claim(store, run_id).go
    assert jobs.complete(store, run_id=run_id, task_id="t1", output={"top_label": "happy"}, settings=SETTINGS)
    return run_id, first.job.id


def test_cache_hits_at_once_each_get_their_own_job(store):
    run_id, first_job = _finished(store)
    results, barrier = [], threading.Barrier(8)

    def go(i):
        barrier.wait()
        results.extend(_submit(store, idem=f"k{i}" if i % 2 else None) for _ in range(5))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # odd threads repeat their key: its first job again
    assert {(r.outcome, r.run.id, r.publish) for r in results} == {("cache", run_id, False),
                                                                      ("idempotent", run_id, False)}
    cached = [r.job.id for r in results if r.outcome == "cache"]
    assert len(set(cached)) == len(cached) == 4 * 5 + 4
    for job_id in cached:
        assert jobs.view(*jobs.load(store, job_id=job_id, client="c1"))["output"] == {"top_label": "happy"}
    assert store.get(f"run:{run_id}")["jobs"] == [first_job]  # reusing a result leaves the run as it was


def test_a_result_that_is_gone_is_not_reused(store):
    run_id, _ = _finished(store)
    store.transact(lambda tx: tx.delete(f"run:{run_id}"))  # expired (its dedup pointer still there)
    again = _submit(store)
    assert again.outcome == "new" and again.run.id != run_id


def test_failure_is_not_cached(store):
    first = _submit(store)
    _claim(store, first.run.id)
    jobs.fail(store, run_id=first.run.id, error={"code": "audio_undecodable", "message": "x", "retryable": False})
    assert jobs.view(*jobs.load(store, job_id=first.job.id, client="c1"))["error"]["code"] == "audio_undecodable"
    again = _submit(store)
    assert again.outcome == "new" and again.run.id != first.run.id


def test_high_priority_join_republishes_once(store):
    _submit(store, priority="low")
    high = _submit(store, priority="high")
    assert high.outcome == "coalesced" and high.publish and high.run.priority == "high"
    assert not _submit(store, priority="high").publish


def test_duplicate_message_is_skipped_and_redelivery_capped(store):
    run_id = _submit(store).run.id
    assert _claim(store, run_id, task="t1").reason == "claimed"
    assert _claim(store, run_id, task="t2").reason == "duplicate"
    assert _claim(store, run_id, task="t1", max_deliveries=2).reason == "redelivered"
    poison = _claim(store, run_id, task="t1", max_deliveries=2)
    assert (poison.go, poison.reason) == (False, "poison")
    assert store.get(f"run:{run_id}")["error"]["code"] == "worker_lost"


def test_cancel_detaches_only_that_job(store):
    a, b = _submit(store), _submit(store)
    jobs.cancel(store, job_id=a.job.id, client="c1")
    assert jobs.view(*jobs.load(store, job_id=a.job.id, client="c1"))["status"] == "canceled"
    assert jobs.view(*jobs.load(store, job_id=b.job.id, client="c1"))["status"] == "queued"
    jobs.cancel(store, job_id=b.job.id, client="c1")
    assert store.get(f"run:{a.run.id}")["state"] == "canceled"
    assert _claim(store, a.run.id).reason == "finished"
    with pytest.raises(Conflict):
        jobs.cancel(store, job_id=b.job.id, client="c1")
    assert _submit(store).outcome == "new"  # a canceled run is not reused


def test_idempotency_key_returns_the_same_job(store):
    a = _submit(store, idem="k1")
    b = _submit(store, idem="k1")
    assert b.outcome == "idempotent" and b.job.id == a.job.id and not b.publish
    with pytest.raises(Conflict, match="different request"):
        _submit(store, idem="k1", priority="high")
    assert _submit(store, idem="k1", client="c2").job.id != a.job.id


def test_other_clients_jobs_are_not_found(store):
    a = _submit(store)
    with pytest.raises(NotFound):
        jobs.load(store, job_id=a.job.id, client="someone-else")


def test_expired_lease_fails_the_job(store, tmp_path):
    run_id = _submit(store).run.id
    job_id = store.get(f"run:{run_id}")["jobs"][0]
    jobs.claim(store, run_id=run_id, task_id="t1", worker="w", max_deliveries=3, hard_limit_s=-1000)
    assert jobs.view(*jobs.load(store, job_id=job_id, client="c1"))["status"] == "running"  # a read only reads
    told = []
    janitor = Janitor(settings=SETTINGS, store=store, blobs=LocalBlobs(tmp_path), notifier=_Told(told))
    janitor.leases()  # the janitor fails the run its vanished worker left
    view = jobs.view(*jobs.load(store, job_id=job_id, client="c1"))
    assert view["status"] == "failed" and view["error"]["code"] == "worker_lost"
    janitor.leases()
    assert told == ["job.failed"]  # once, when it failed


class _Told:
    """The janitor's webhooks, recorded (the real Notifier needs a broker)."""

    def __init__(self, told: list) -> None:
        self.told = told

    def run_event(self, run: jobs.Run, event: str) -> None:
        self.told.append(event)


def test_queue_depth_counts_waiting_runs_per_priority(store):
    a, b = _submit(store, sha="a" * 64), _submit(store, sha="b" * 64)
    _submit(store, sha="a" * 64)  # coalesced: no new waiting run
    h = _submit(store, sha="c" * 64, priority="high")
    assert jobs.queue_depth(store) == {"high": 1, "low": 2}
    _submit(store, sha="b" * 64, priority="high")  # raises b to high
    assert jobs.queue_depth(store) == {"high": 2, "low": 1}
    _claim(store, h.run.id)
    jobs.requeue(store, run_id=h.run.id, task_id="t1")  # a transient fault puts it back
    assert jobs.queue_depth(store) == {"high": 2, "low": 1}
    _claim(store, h.run.id, task="t2")
    jobs.abandon_run(store, run_id=b.run.id, error={"code": "broker_unavailable", "message": "x",
                                                       "retryable": True})
    for job_id in store.get(f"run:{a.run.id}")["jobs"]:
        jobs.cancel(store, job_id=job_id, client="c1")
    assert jobs.queue_depth(store) == {"high": 0, "low": 0}


def test_full_queue_refuses_new_runs_but_not_cached_or_coalesced_ones(store):
    limited = harness.settings(max_queued_low=2, max_queued_high=1)

    def submit(sha, priority="low"):
        submission = jobs.submit(store, settings=limited, client="c1", priority=priority, input=_input(sha),
                                 options=OPTS, metadata={}, model="m@1")
        if submission.outcome == "new":
            jobs.mark_filed(store, run_id=submission.run.id)
        return submission

    first = submit("a" * 64)
    submit("b" * 64)
    with pytest.raises(Overloaded, match="2 low-priority jobs are waiting"):
        submit("c" * 64)
    assert submit("a" * 64).outcome == "coalesced"
    high = submit("c" * 64, priority="high")
    assert high.outcome == "new"  # its own limit
    raised = submit("b" * 64, priority="high")  # high is full: joins without raising the run
    assert raised.outcome == "coalesced" and not raised.publish and raised.run.priority == "low"
    assert _claim(store, first.run.id).reason == "deferred"  # a high run waits: the low one goes back
    assert jobs.queue_depth(store) == {"high": 1, "low": 2}
    _claim(store, high.run.id, task="t0")
    assert _claim(store, first.run.id).go
    assert submit("d" * 64).outcome == "new"  # a started run frees its place
    assert jobs.queue_depth(store) == {"high": 0, "low": 2}


def test_completing_twice_reports_the_same_run(store):
    """A commit whose reply was lost is retried by the worker; the retry must see its own result."""
    run_id = _submit(store).run.id
    _claim(store, run_id)
    first = jobs.complete(store, run_id=run_id, task_id="t1", output={"top_label": "sad"}, settings=SETTINGS)
    again = jobs.complete(store, run_id=run_id, task_id="t1", output={"top_label": "sad"}, settings=SETTINGS)
    assert first and again and again.state == "succeeded"
    assert jobs.complete(store, run_id=run_id, task_id="t9", output={}, settings=SETTINGS) is None
    other = _submit(store, sha="e" * 64).run.id
    _claim(store, other)
    error = {"code": "audio_undecodable", "message": "x", "retryable": False}
    assert jobs.fail(store, run_id=other, error=error, task_id="t1")
    assert jobs.fail(store, run_id=other, error=error, task_id="t1").state == "failed"
    assert jobs.fail(store, run_id=other, error=error, task_id="t9") is None


