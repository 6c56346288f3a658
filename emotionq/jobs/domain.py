"""The domain as typed classes: a job (one client's ask), a run (one execution of the model that serves
every identical ask), and a waiting run's place in the queue (a tagged union).

They are plain slotted dataclasses: built from and turned into the store's JSON documents only in
``emotionq.jobs.records`` (``from_doc``/``to_doc`` here), whose shape is the one earlier versions wrote,
so stored jobs and runs load unchanged. Everything else reads and writes attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED = "queued", "running", "succeeded", "failed", "canceled"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELED})


@dataclass(slots=True)
class Filing:
    """A new run held while its audio is filed; at ``until`` it enters its backlog anyway."""

    priority: str
    client: str
    until: float
    at = "filing"


@dataclass(slots=True)
class Backlog:
    """In ``client``'s backlog of ``priority``, at sequence number ``seq``."""

    priority: str
    client: str
    seq: int
    at = "backlog"


@dataclass(slots=True)
class Dispatched:
    """Handed to the broker at ``since`` (out of ``client``'s backlog, where ``seq`` was its place)."""

    priority: str
    since: float
    client: str | None = None
    seq: int | None = None
    at = "dispatched"


@dataclass(slots=True)
class Retrying:
    """Taken back from a worker for a retry: its message is on its way to the broker again."""

    at = "retrying"


Place = Filing | Backlog | Dispatched | Retrying
PLACES: dict[str, type] = {"filing": Filing, "backlog": Backlog, "dispatched": Dispatched}


def place_from_doc(doc: dict | None, state: str) -> Place | None:
    """The place a stored ``queue`` field names; a queued run with none is retrying."""
    if doc is None:
        return Retrying() if state == QUEUED else None
    kind = PLACES[doc["at"]]
    if kind is Dispatched:
        return Dispatched(priority=doc["priority"], since=doc["since"], client=doc.get("client"), seq=doc.get("seq"))
    if kind is Backlog:
        return Backlog(priority=doc["priority"], client=doc["client"], seq=doc["seq"])
    return Filing(priority=doc["priority"], client=doc["client"], until=doc["until"])


def place_to_doc(place: Place | None) -> dict | None:
    if place is None or isinstance(place, Retrying):
        return None
    if isinstance(place, Dispatched):
        doc = {"at": place.at, "priority": place.priority, "since": place.since}
        if place.client is not None:
            doc["client"] = place.client
        if place.seq is not None:
            doc["seq"] = place.seq
        return doc
    if isinstance(place, Backlog):
        return {"at": place.at, "priority": place.priority, "client": place.client, "seq": place.seq}
    return {"at": place.at, "priority": place.priority, "client": place.client, "until": place.until}


@dataclass(slots=True)
class Run:
    """One model run on one audio blob with one model and options; every job points at one."""

    id: str
    key: str  # the dedup key: audio, model and options
    sha256: str
    model: str
    options: dict
    duration_s: float  # from the header; ``decoded_duration_s`` once decoded
    priority: str
    client: str
    state: str = QUEUED
    jobs: list[str] = field(default_factory=list)  # the jobs that still want it
    channels: int = 1
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    published_at: float | None = None
    owner: str | None = None  # the task that holds it
    deliveries: int = 0
    retries: int = 0
    deadline: float | None = None  # its lease, while running
    worker: str | None = None
    output: dict | None = None
    error: dict | None = None  # {"code", "message", "retryable"}
    queue: Place | None = None  # where it waits, while queued
    blob: str | None = None  # the generation its audio is filed under
    decoded_duration_s: float | None = None

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> Run:
        state = d["state"]
        return cls(
            id=d["id"], key=d["key"], sha256=d["sha256"], model=d["model"], options=d["options"],
            duration_s=d["duration_s"], priority=d["priority"], client=d.get("client", ""), state=state,
            jobs=d["jobs"], channels=d.get("channels", 1), created_at=d["created_at"], started_at=d["started_at"],
            finished_at=d["finished_at"], published_at=d["published_at"], owner=d["owner"],
            deliveries=d["deliveries"], retries=d["retries"], deadline=d["deadline"], worker=d["worker"],
            output=d["output"], error=d["error"], queue=place_from_doc(d.get("queue"), state), blob=d.get("blob"),
            decoded_duration_s=d.get("decoded_duration_s"))

    def to_doc(self) -> dict[str, Any]:
        doc = {
            "id": self.id, "key": self.key, "sha256": self.sha256, "model": self.model, "options": self.options,
            "duration_s": self.duration_s, "channels": self.channels, "priority": self.priority,
            "client": self.client, "state": self.state, "jobs": self.jobs, "created_at": self.created_at,
            "started_at": self.started_at, "finished_at": self.finished_at, "published_at": self.published_at,
            "owner": self.owner, "deliveries": self.deliveries, "retries": self.retries, "deadline": self.deadline,
            "worker": self.worker, "output": self.output, "error": self.error, "queue": place_to_doc(self.queue),
            "blob": self.blob,
        }
        if self.decoded_duration_s is not None:
            doc["decoded_duration_s"] = self.decoded_duration_s
        return doc


@dataclass(slots=True)
class Job:
    """One client's ask: its request, and the run that answers it (``dedup``: how it was attached)."""

    id: str
    client: str
    priority: str
    input: dict  # filename, content_type, bytes, duration_s, channels, sha256 (and url)
    options: dict
    metadata: dict
    run_id: str
    created_at: float
    webhook: dict | None = None  # {"url", "events"}
    canceled_at: float | None = None
    dedup: str | None = None  # None: it made its run; "coalesced" or "cache"

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> Job:
        return cls(id=d["id"], client=d["client"], priority=d["priority"], input=d["input"], options=d["options"],
                   metadata=d["metadata"], run_id=d["run_id"], created_at=d["created_at"], webhook=d.get("webhook"),
                   canceled_at=d.get("canceled_at"), dedup=d.get("dedup"))

    def to_doc(self) -> dict[str, Any]:
        return {"id": self.id, "client": self.client, "priority": self.priority, "canceled_at": self.canceled_at,
                "input": self.input, "options": self.options, "metadata": self.metadata, "webhook": self.webhook,
                "run_id": self.run_id, "created_at": self.created_at, "dedup": self.dedup}


def status_of(job: Job, run: Run) -> str:
    """A job's status: canceled if its client canceled it, else its run's state."""
    return CANCELED if job.canceled_at else run.state
