"""Backlogs and the dispatcher's choice on both stores: strict priority, clients in turns, the
broker's share bounded, and dispatches whose publisher died put back."""

from __future__ import annotations

import time

import pytest

import harness
from emotionq import jobs
from emotionq.jobs.domain import Backlog
from emotionq.jobs.records import get_run
from emotionq.jobs.scheduler import backlog, dispatch, repair

SETTINGS = harness.settings()
OPTS = {"granularity": "utterance", "embedding": False}


def _submit(store, sha, *, client="a", priority="low", filed=True):
    submission = jobs.submit(store, settings=SETTINGS, client=client, priority=priority, options=OPTS, metadata={},
                             model="m@1", input={"filename": "x.wav", "content_type": "audio/wav", "bytes": 100,
                                                 "duration_s": 3.0, "sha256": sha})
    if filed and submission.outcome == "new":  # as the intake does once the audio is in the blob store
        jobs.mark_filed(store, run_id=submission.run.id)
    return submission


def _next(store, limit=1000):
    run = store.transact(lambda tx: dispatch._next(tx, limit))
    return None if run is None else run.id


def _sha(client, k):
    return f"{client}{k:063d}"[:64]


def test_high_first_then_clients_in_turns(store):
    a = [_submit(store, _sha("a", k), client="a").run.id for k in range(5)]
    b = [_submit(store, _sha("b", k), client="b").run.id for k in range(2)]
    high = _submit(store, _sha("c", 0), client="c", priority="high").run.id
    order = [_next(store) for _ in range(8)]
    assert order == [high, b[0], a[0], b[1], a[1], a[2], a[3], a[4]]
    assert _next(store) is None


def test_a_new_run_waits_for_its_audio_to_be_filed(store):
    held = _submit(store, _sha("a", 0), filed=False).run.id
    later = _submit(store, _sha("a", 1)).run.id
    assert _next(store) == later  # a dispatcher never hands a worker audio that is not in the blob store yet
    assert _next(store) is None
    high = _submit(store, _sha("a", 0), priority="high")  # a high job joins the held run: still held, now high
    assert high.outcome == "coalesced" and _next(store) is None
    jobs.mark_filed(store, run_id=held)
    assert _next(store) == held
    assert store.get(f"run:{held}")["priority"] == "high"


def test_a_held_run_whose_filer_died_enters_at_its_deadline(store):
    held = _submit(store, _sha("a", 0), filed=False).run.id
    assert repair.unfiled(store) == 0 and _next(store) is None
    store.transact(lambda tx: tx.index(backlog.FILING_INDEX, held, time.time() - 1))  # its deadline passed
    assert repair.unfiled(store) == 1
    assert _next(store) == held


def test_a_newcomer_is_served_within_one_round(store):
    a = [_submit(store, _sha("a", k), client="a").run.id for k in range(6)]
    assert [_next(store), _next(store)] == a[:2]
    b = _submit(store, _sha("b", 0), client="b").run.id
    assert _next(store) == b
    assert _next(store) == a[2]


def test_the_broker_holds_at_most_the_limit_per_priority(store):
    runs = [_submit(store, _sha("a", k)).run.id for k in range(4)]
    assert [_next(store, limit=2), _next(store, limit=2), _next(store, limit=2)] == [*runs[:2], None]
    assert jobs.claim(store, run_id=runs[0], task_id="t", worker="w", max_deliveries=3, hard_limit_s=60).go
    assert _next(store, limit=2) == runs[2]  # a start made room


def test_low_waits_while_high_waits_and_a_low_claim_is_deferred(store):
    low = _submit(store, _sha("a", 0)).run.id
    assert _next(store) == low
    high = [_submit(store, _sha("b", k), client="b", priority="high").run.id for k in range(2)]
    assert _next(store, limit=1) == high[0]
    _submit(store, _sha("a", 1))
    assert _next(store, limit=1) is None  # high is at its limit and one still waits: no low goes
    claim = jobs.claim(store, run_id=low, task_id="t", worker="w", max_deliveries=3, hard_limit_s=60)
    assert claim.reason == "deferred"  # the broker handed over a low run while high ones wait
    assert isinstance(get_run(store, low).queue, Backlog)
    dispatched = []
    for run_id in high:
        jobs.claim(store, run_id=run_id, task_id=run_id, worker="w", max_deliveries=3, hard_limit_s=60)
        dispatched.append(_next(store, limit=1))
    assert dispatched == [high[1], low]  # back at the front of its backlog


def test_cancel_purge_and_raise_leave_the_backlog(store):
    first = _submit(store, _sha("a", 0))
    second = _submit(store, _sha("a", 1))
    jobs.cancel(store, job_id=first.job.id, client="a")
    raised = _submit(store, _sha("a", 1), client="b", priority="high")
    assert raised.publish and raised.run.priority == "high"
    assert _next(store) == second.run.id
    assert _next(store) is None
    assert backlog.turns(store, "low")["counts"] == {} and backlog.turns(store, "high")["ahead"] == 1


def test_a_dispatch_whose_publisher_died_is_put_back(store, monkeypatch):
    run_id = _submit(store, _sha("a", 0)).run.id
    assert _next(store) == run_id  # the API died here, before publishing
    assert repair.unconfirmed(store) == 0  # too young to tell from a slow publisher
    later = time.time() + dispatch.ORPHAN_AFTER_S + 1
    monkeypatch.setattr(dispatch.time, "time", lambda: later)
    assert repair.unconfirmed(store) == 1
    assert backlog.turns(store, "low")["ahead"] == 0
    assert _next(store) == run_id
    dispatch._published(store, run_id)
    assert repair.unconfirmed(store) == 0  # its message is out: not an orphan


def test_positions_follow_the_turns_and_count_high_first(store):
    from emotionq.jobs.scheduler import position

    a = [_submit(store, _sha("a", k), client="a").run.id for k in range(4)]
    b = [_submit(store, _sha("b", k), client="b").run.id for k in range(2)]

    def places():
        return {r: position.estimate(store, get_run(store, r))["position"] for r in a + b}

    expected = [b[0], a[0], b[1], a[1], a[2], a[3]]  # the order the dispatcher takes them in
    assert places() == {r: i for i, r in enumerate(expected)}
    high = _submit(store, _sha("c", 0), client="c", priority="high").run.id
    assert position.estimate(store, get_run(store, high))["position"] == 0
    assert places() == {r: i + 1 for i, r in enumerate(expected)}
    taken = [_next(store, limit=2) for _ in range(3)]
    assert taken == [high, b[0], a[0]]
    assert places() == {r: i + 1 for i, r in enumerate(expected)}  # the high one, in the broker, still first


@pytest.mark.rabbitmq
def test_dispatched_runs_whose_messages_were_lost_are_put_back(store, amqp_url, monkeypatch):
    from celery import Celery

    from emotionq.queues import INFERENCE

    celery = Celery(broker=amqp_url)
    with celery.connection_for_write() as conn:
        INFERENCE(conn.default_channel).declare()  # an empty queue: the message of the run below is gone
    run_id = _submit(store, _sha("a", 0)).run.id
    assert _next(store, limit=1) == run_id and _next(store, limit=1) is None  # the broker "holds" one
    assert repair.lost_messages(store, celery) == 0  # too young: it may be on its way to a worker
    later = time.time() + repair.LOST_AFTER_S + 1
    monkeypatch.setattr(repair.time, "time", lambda: later)
    assert repair.lost_messages(store, celery) == 1
    assert backlog.turns(store, "low")["ahead"] == 0 and _next(store, limit=1) == run_id
