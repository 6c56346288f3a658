"""The janitor's sweeps, each a loop over one of the store's indexes (plain code: tests call it)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from emotionq import jobs, metrics
from emotionq.blobs import BlobStore, name, parse_name
from emotionq.jobs import blobrefs
from emotionq.jobs.scheduler import leases
from emotionq.settings import Settings
from emotionq.store import Store
from emotionq.webhooks import delivery
from emotionq.webhooks.events import Notifier

log = logging.getLogger(__name__)


@dataclass
class Janitor:
    settings: Settings
    store: Store
    blobs: BlobStore
    notifier: Notifier
    last_orphan_scan: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)  # what the last sweep did, for logs and tests

    def sweep(self, *, keep_going: Callable[[], bool] = lambda: True) -> dict[str, int]:
        """One sweep of each kind; ``keep_going()`` is asked between them (it renews the lease)."""
        self.counts = {}
        for step in (self.leases, self.deliveries, self.blobs_unused, self.orphans):
            if not keep_going():
                break
            step()
        if any(self.counts.values()):
            log.info("janitor: %s", ", ".join(f"{k} {v}" for k, v in self.counts.items() if v))
        return self.counts

    def _count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def leases(self) -> None:
        """Fail runs whose lease expired, and tell their webhooks."""
        now = time.time()
        for run_id in leases.due(self.store, now=now, limit=self.settings.janitor_batch):
            failed = jobs.expire_lease(self.store, run_id=run_id, now=now)
            if failed is not None:
                if failed.finished_at >= now:  # failed by this call (not by an earlier, interrupted one)
                    metrics.run_finished(failed)
                    self._count("leases expired")
                log.warning("run %s: its worker %s vanished (lease expired); failed worker_lost", run_id,
                            failed.worker)
                self.notifier.run_event(failed, "job.failed")
                leases.release(self.store, run_id=run_id)

    def deliveries(self) -> None:
        """Queue again the webhook deliveries still pending well after they were due."""
        now = time.time()
        grace = self.settings.janitor_delivery_grace_s
        for record_key, _ in self.store.due(delivery.INDEX, until=now, limit=self.settings.janitor_batch):
            record = self.store.get(record_key)
            if record is None or record["state"] != delivery.PENDING:
                self.store.transact(lambda tx, k=record_key: tx.index(delivery.INDEX, k, None))
                continue
            due = max(record["next_attempt_at"] or 0.0, record["lease_until"] or 0.0)
            if due + grace <= now:  # its message is gone: nothing would ever attempt it
                self.notifier.enqueue(record["job_id"], record["event"])
                self._count("deliveries requeued")
                due = now
            self.store.transact(lambda tx, k=record_key, at=due + grace: tx.index(delivery.INDEX, k, at))

    def blobs_unused(self) -> None:
        """Delete the audio that no live run needs and whose retention has passed."""
        now = time.time()
        for sha, _ in self.store.due(blobrefs.INDEX, until=now, limit=self.settings.janitor_batch):
            gen = blobrefs.condemn(self.store, sha256=sha, now=now)
            if gen is None:
                continue
            self.blobs.delete(name(sha, gen))  # that generation is condemned: no run can come to need it
            blobrefs.bury(self.store, sha256=sha, gen=gen)
            self._count("blobs deleted")

    def orphans(self) -> None:
        """Now and then, list the blob store for objects nothing can use: temporary leftovers of uploads
        that died, and generations that lost to a newer one. Only objects older than the grace go."""
        now = time.time()
        if now - self.last_orphan_scan < self.settings.janitor_orphan_scan_s:
            return
        self.last_orphan_scan = now
        old = now - self.settings.janitor_orphan_grace_s
        for object_name, modified in list(self.blobs.listing()):
            if modified > old:
                continue
            parsed = parse_name(object_name)
            if parsed is None or (parsed[1] is not None
                                  and blobrefs.is_orphan(self.store, sha256=parsed[0], gen=parsed[1])):
                self.blobs.delete(object_name)
                self._count("orphans deleted")
        abort = getattr(self.blobs, "abort_stale_uploads", None)
        if abort is not None:
            self._count("stale uploads aborted", abort(older_than=old))
