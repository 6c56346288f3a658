"""The janitor's sweeps on both stores, called directly: expired leases failed once (webhooks told),
stalled deliveries queued again, unused audio deleted and audio in use never, one janitor at a time."""

from __future__ import annotations

import os
import time

import harness
from emotionq import jobs
from emotionq.blobs import name
from emotionq.blobs.local import LocalBlobs
from emotionq.janitor import lock
from emotionq.janitor.sweeps import Janitor
from emotionq.jobs import blobrefs
from emotionq.jobs.scheduler import leases
from emotionq.webhooks import delivery

OPTS = {"granularity": "utterance", "embedding": False}
HOOK = {"url": "https://example.com/hook", "events": ["job.failed", "job.succeeded"]}


class Told:
    """What the janitor asked the webhooks to do (the real Notifier needs a broker; tests of it are
    in tests/webhooks)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.enqueued: list[tuple[str, str]] = []

    def run_event(self, run: jobs.Run, event: str) -> None:
        self.events += [(job_id, event) for job_id in run.jobs]

    def enqueue(self, job_id: str, event: str, countdown: float = 0.0) -> None:
        self.enqueued.append((job_id, event))


def _janitor(store, tmp_path, **settings) -> Janitor:
    s = harness.settings(var_dir=tmp_path, **settings)
    return Janitor(settings=s, store=store, blobs=LocalBlobs(tmp_path / "blobs"), notifier=Told())


def _upload(janitor: Janitor, data: bytes):
    """What the intake does: receive, submit (the store holds the blob), file the audio under its generation."""
    writer = janitor.blobs.writer(max_bytes=10**7)
    writer.write(data)
    writer.close()
    sub = jobs.submit(janitor.store, settings=janitor.settings, client="c", priority="low", options=OPTS,
                      metadata={}, model="m", webhook=HOOK,
                      input={"filename": "a.wav", "content_type": None, "bytes": writer.size, "duration_s": 1.0,
                             "sha256": writer.sha256})
    if sub.outcome in ("new", "coalesced"):
        writer.commit(sub.run.blob)
    writer.abort()
    return sub


def _fail(store, run_id: str) -> None:
    jobs.fail(store, run_id=run_id, error={"code": "audio_undecodable", "message": "x", "retryable": False})


def test_an_expired_lease_is_failed_once_with_its_webhooks_though_nobody_reads_the_job(store, tmp_path):
    janitor = _janitor(store, tmp_path)
    sub = _upload(janitor, b"a")
    jobs.claim(store, run_id=sub.run.id, task_id="t1", worker="w@gone", max_deliveries=3, hard_limit_s=-1000)
    janitor.leases()
    run = store.get(f"run:{sub.run.id}")
    assert run["state"] == "failed" and run["error"]["code"] == "worker_lost"
    assert janitor.notifier.events == [(sub.job.id, "job.failed")] and janitor.counts == {"leases expired": 1}
    janitor.leases()
    assert janitor.notifier.events == [(sub.job.id, "job.failed")]  # once
    assert store.get(f"run:{sub.run.id}")["finished_at"] == run["finished_at"]


def test_a_janitor_that_died_after_failing_a_run_but_before_telling_tells_once_more(store, tmp_path):
    janitor = _janitor(store, tmp_path)
    sub = _upload(janitor, b"b")
    jobs.claim(store, run_id=sub.run.id, task_id="t1", worker="w", max_deliveries=3, hard_limit_s=-1000)
    failed = jobs.expire_lease(store, run_id=sub.run.id, now=time.time())  # ... and the janitor died here
    janitor.leases()
    assert janitor.notifier.events == [(sub.job.id, "job.failed")]  # told by the next sweep
    assert janitor.counts == {} and store.get(f"run:{sub.run.id}")["finished_at"] == failed.finished_at


def test_a_live_or_finished_lease_is_left_alone(store, tmp_path):
    janitor = _janitor(store, tmp_path)
    live, done = _upload(janitor, b"c"), _upload(janitor, b"d")
    jobs.claim(store, run_id=live.run.id, task_id="t1", worker="w", max_deliveries=3, hard_limit_s=600)
    jobs.claim(store, run_id=done.run.id, task_id="t2", worker="w", max_deliveries=3, hard_limit_s=-1000)
    jobs.complete(store, run_id=done.run.id, task_id="t2", output={}, settings=janitor.settings)
    janitor.leases()
    assert store.get(f"run:{live.run.id}")["state"] == "running"
    assert store.get(f"run:{done.run.id}")["state"] == "succeeded"
    assert janitor.notifier.events == []
    assert [m for m, _ in store.due(leases.INDEX, until=time.time() + 10**6, limit=10)] == [live.run.id]


def test_a_delivery_left_pending_is_queued_again(store, tmp_path):
    janitor = _janitor(store, tmp_path, janitor_delivery_grace_s=5)
    sub = _upload(janitor, b"e")
    record = delivery.create(store, job=sub.job, event="job.failed", data={}, ttl=60)  # its message was lost
    k = delivery.key(sub.job.id, "job.failed")
    janitor.deliveries()
    assert janitor.notifier.enqueued == []  # not due for a look yet
    store.transact(lambda tx: tx.index(delivery.INDEX, k, 0.0))  # ... time passes
    janitor.deliveries()
    assert janitor.notifier.enqueued == []  # due only 0 s ago, within the grace
    store.transact(lambda tx: (tx.put(k, {**record, "next_attempt_at": time.time() - 60}), tx.index(delivery.INDEX, k, 0.0)))
    janitor.deliveries()
    assert janitor.notifier.enqueued == [(sub.job.id, "job.failed")]
    [(_, at)] = store.due(delivery.INDEX, until=time.time() + 10**6, limit=10)
    assert at > time.time()  # looked at again later, not at every sweep
    store.transact(lambda tx: (tx.put(k, {**record, "state": "delivered"}), tx.index(delivery.INDEX, k, 0.0)))
    janitor.deliveries()
    assert store.due(delivery.INDEX, until=time.time() + 10**6, limit=10) == []


def test_unused_audio_is_deleted_once_retention_passed_and_never_while_a_run_needs_it(store, tmp_path):
    janitor = _janitor(store, tmp_path, blob_retention_s=0)
    sub = _upload(janitor, os.urandom(100))
    sha, gen = sub.run.sha256, sub.run.blob
    kept = _janitor(store, tmp_path / "k", blob_retention_s=3600)
    other = _upload(kept, os.urandom(100))
    _fail(store, other.run.id)
    janitor.blobs_unused()
    assert janitor.blobs.exists(name(sha, gen))  # queued: a worker will fetch it
    _fail(store, sub.run.id)
    janitor.blobs_unused()
    assert janitor.blobs.exists(name(sha, gen))  # a live run's blob is looked at again only later
    store.transact(lambda tx: tx.index(blobrefs.INDEX, sha, 0.0))  # ... time passes
    janitor.blobs_unused()
    assert not janitor.blobs.exists(name(sha, gen)) and store.get(blobrefs.key(sha)) is None
    assert janitor.counts == {"blobs deleted": 1}
    assert kept.blobs.exists(name(other.run.sha256, other.run.blob))  # retention: an hour


def test_the_gc_race_is_decided_by_the_store_not_by_timing(store, tmp_path):
    """The interleaving the issue names, step by step: a collection finds no reference and condemns the
    blob; an upload of the same audio arrives before the delete lands. The upload files a new
    generation; the late delete removes only the condemned one."""
    janitor = _janitor(store, tmp_path, blob_retention_s=0)
    audio = os.urandom(200)
    first = _upload(janitor, audio)
    _fail(store, first.run.id)
    sha, old = first.run.sha256, first.run.blob
    assert blobrefs.condemn(store, sha256=sha, now=time.time()) == old  # the janitor: nothing holds it
    second = _upload(janitor, audio)  # the upload, between condemn and delete
    assert second.outcome == "new" and second.run.blob != old
    janitor.blobs.delete(name(sha, old))  # the janitor's delete lands late
    blobrefs.bury(store, sha256=sha, gen=old)  # and sees the blob revived: keeps its document
    with janitor.blobs.local(sha, second.run.blob) as path:
        assert path.read_bytes() == audio  # the run's audio is there
    janitor.blobs_unused()
    assert janitor.blobs.exists(name(sha, second.run.blob))  # its run is live: kept
    assert [n for n, _ in janitor.blobs.listing() if not n.startswith("tmp/")] == [name(sha, second.run.blob)]


def test_a_janitor_killed_between_condemn_and_delete_is_finished_by_the_next(store, tmp_path):
    janitor = _janitor(store, tmp_path, blob_retention_s=0)
    sub = _upload(janitor, os.urandom(50))
    _fail(store, sub.run.id)
    blobrefs.condemn(store, sha256=sub.run.sha256, now=time.time())  # ... and it died
    janitor.blobs_unused()
    assert not janitor.blobs.exists(name(sub.run.sha256, sub.run.blob))
    assert store.get(blobrefs.key(sub.run.sha256)) is None


def test_orphans_and_leftovers_are_deleted_once_old(store, tmp_path):
    janitor = _janitor(store, tmp_path, janitor_orphan_grace_s=60, janitor_orphan_scan_s=1)
    sub = _upload(janitor, os.urandom(50))
    orphan = janitor.blobs.root / name(sub.run.sha256, "0ldgen")
    orphan.write_bytes(b"a late upload of a condemned generation")
    leftover = janitor.blobs.tmp_dir / "upload-dead"
    leftover.write_bytes(b"an API died mid-upload")
    janitor.orphans()
    assert orphan.exists() and leftover.exists()  # younger than the grace
    for path in (orphan, leftover, janitor.blobs.path(sub.run.sha256, sub.run.blob)):
        os.utime(path, (time.time() - 120, time.time() - 120))
    janitor.last_orphan_scan = 0
    janitor.orphans()
    assert not orphan.exists() and not leftover.exists()
    assert janitor.blobs.exists(name(sub.run.sha256, sub.run.blob))


def test_one_janitor_at_a_time_and_another_takes_over_when_it_lapses(store):
    assert lock.acquire(store, holder="a", ttl_s=0.3)
    assert not lock.acquire(store, holder="b", ttl_s=0.3)
    assert lock.acquire(store, holder="a", ttl_s=0.3)  # renewed
    time.sleep(0.4)
    assert lock.acquire(store, holder="b", ttl_s=5) and lock.holder(store) == "b"
    lock.release(store, holder="a")  # not a's any more: nothing happens
    assert lock.holder(store) == "b"
    lock.release(store, holder="b")
    assert lock.holder(store) is None
