"""The domain as typed classes: a job (one client's ask), a run (one execution of the model that serves
every identical ask), and a waiting run's place in the queue (a tagged union).

They are plain slotted dataclasses: built from and turned into the store's JSON documents only in
``emotionq.jobs.records`` (``from_doc``/``to_doc`` here). The documents are compact, since every waiting job
keeps two in the store: a member is written only where it differs from its default (no ``null``s, no
zeros, no ``queued`` state or ``low`` priority), the id is the key's, a job keeps only what its run does not (the audio's duration, channels and
SHA-256, and the options, are its run's: the same bytes and options make the same run), and a place
repeats neither its run's priority nor its client. Documents of earlier versions, which wrote every
member, load unchanged. Everything else reads and writes attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED = "queued", "running", "succeeded", "failed", "canceled"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELED})
LOW = "low"  # a document without a priority is low; one without a state is queued
AUDIO_FACTS = frozenset({"duration_s", "channels", "sha256"})  # a job's input that is its run's
_RUN_OPTIONAL = ("started_at", "finished_at", "published_at", "owner", "deadline", "worker", "output", "error", "blob",
                 "decoded_duration_s")


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


def place_from_doc(doc: dict | None, state: str, *, priority: str = "", client: str = "") -> Place | None:
    """The place a stored ``queue`` field names; a queued run with none is retrying. A place without a
    priority or client has its run's (``priority``, ``client``)."""
    if doc is None:
        return Retrying() if state == QUEUED else None
    kind = PLACES[doc["at"]]
    priority = doc.get("priority", priority)
    if kind is Dispatched:
        return Dispatched(priority=priority, since=doc["since"], client=doc.get("client", client or None),
                          seq=doc.get("seq"))
    if kind is Backlog:
        return Backlog(priority=priority, client=doc.get("client", client), seq=doc["seq"])
    return Filing(priority=priority, client=doc.get("client", client), until=doc["until"])


def place_to_doc(place: Place | None, *, priority: str = "", client: str = "") -> dict | None:
    """The ``queue`` field of a run of ``priority`` and ``client``: what the place does not share with it."""
    if place is None or isinstance(place, Retrying):
        return None
    doc: dict[str, Any] = {"at": place.at}
    if place.priority != priority:
        doc["priority"] = place.priority
    if place.client != (client or None if isinstance(place, Dispatched) else client):
        doc["client"] = place.client
    if isinstance(place, Dispatched):
        doc["since"] = place.since
        if place.seq is not None:
            doc["seq"] = place.seq
    elif isinstance(place, Backlog):
        doc["seq"] = place.seq
    else:
        doc["until"] = place.until
    return doc


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
    def from_doc(cls, d: dict[str, Any], *, id: str, key: str) -> Run:
        """The run stored under ``id`` whose dedup key is ``key`` (``emotionq.jobs.records`` derives it where
        the document has none)."""
        get = d.get
        state, priority, client = get("state", QUEUED), get("priority", LOW), get("client", "")
        return cls(
            id=id, key=key, sha256=d["sha256"], model=d["model"], options=d["options"],
            duration_s=d["duration_s"], priority=priority, client=client, state=state, jobs=d["jobs"],
            channels=get("channels", 1), created_at=d["created_at"], started_at=get("started_at"),
            finished_at=get("finished_at"), published_at=get("published_at"), owner=get("owner"),
            deliveries=get("deliveries", 0), retries=get("retries", 0), deadline=get("deadline"), worker=get("worker"),
            output=get("output"), error=get("error"),
            queue=place_from_doc(get("queue"), state, priority=priority, client=client), blob=get("blob"),
            decoded_duration_s=get("decoded_duration_s"))

    def to_doc(self) -> dict[str, Any]:
        """The run's document, without its id (the key's) and dedup key (``emotionq.jobs.records`` adds it
        where it cannot be derived), and without members at their defaults."""
        doc: dict[str, Any] = {"sha256": self.sha256, "model": self.model, "options": self.options,
                               "duration_s": self.duration_s, "client": self.client, "jobs": self.jobs,
                               "created_at": self.created_at}
        if self.state != QUEUED:
            doc["state"] = self.state
        if self.priority != LOW:
            doc["priority"] = self.priority
        for name in _RUN_OPTIONAL:
            value = getattr(self, name)
            if value is not None:
                doc[name] = value
        if self.channels != 1:
            doc["channels"] = self.channels
        if self.deliveries:
            doc["deliveries"] = self.deliveries
        if self.retries:
            doc["retries"] = self.retries
        queue = place_to_doc(self.queue, priority=self.priority, client=self.client)
        if queue is not None:
            doc["queue"] = queue
        return doc


@dataclass(slots=True)
class Job:
    """One client's ask: its request, and the run that answers it (``dedup``: how it was attached)."""

    id: str
    client: str
    priority: str
    input: dict  # filename, content_type, bytes, duration_s, channels, sha256 (and url); see input_of
    options: dict | None  # None: its run's (options_of)
    metadata: dict
    run_id: str
    created_at: float
    webhook: dict | None = None  # {"url", "events"}
    canceled_at: float | None = None
    dedup: str | None = None  # None: it made its run; "coalesced" or "cache"

    @classmethod
    def from_doc(cls, d: dict[str, Any], *, id: str) -> Job:
        """The job stored under ``id``. Its ``input`` lacks the audio's facts, and ``options`` is None, where the
        document left them to its run (``input_of``, ``options_of``)."""
        return cls(id=id, client=d["client"], priority=d.get("priority", LOW), input=d["input"], options=d.get("options"),
                   metadata=d.get("metadata", {}), run_id=d["run_id"], created_at=d["created_at"],
                   webhook=d.get("webhook"), canceled_at=d.get("canceled_at"), dedup=d.get("dedup"))

    def to_doc(self) -> dict[str, Any]:
        """The job's document: without its id (the key's), the audio's facts and the options (its run's), and
        members at their defaults."""
        doc: dict[str, Any] = {"client": self.client, "input": {k: v for k, v in self.input.items() if k not in AUDIO_FACTS},
                               "run_id": self.run_id, "created_at": self.created_at}
        if self.priority != LOW:
            doc["priority"] = self.priority
        if self.metadata:
            doc["metadata"] = self.metadata
        for name in ("webhook", "canceled_at", "dedup"):
            value = getattr(self, name)
            if value is not None:
                doc[name] = value
        return doc


def input_of(job: Job, run: Run) -> dict[str, Any]:
    """The job's ``input`` as the API shows it: the upload's name, type and size, the audio's duration,
    channels and SHA-256 (its run's, where the job's document left them out), and the URL of a job by URL."""
    if "sha256" in job.input:  # as submitted, or a document of an earlier version
        return job.input
    envelope = dict(job.input)
    url = envelope.pop("url", None)
    return {**envelope, "duration_s": run.duration_s, "channels": run.channels, "sha256": run.sha256,
            **({"url": url} if url is not None else {})}


def options_of(job: Job, run: Run) -> dict:
    """The job's options: its run's (the same, by the dedup key), where its document left them out."""
    return run.options if job.options is None else job.options


def status_of(job: Job, run: Run) -> str:
    """A job's status: canceled if its client canceled it, else its run's state."""
    return CANCELED if job.canceled_at else run.state
