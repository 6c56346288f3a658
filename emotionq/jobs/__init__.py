"""Jobs and runs: what a client asked for, and the one model run that serves all identical asks.

A *job* is one client request. A *run* is one execution of the model on one
audio blob with one model and one set of options; every job points at a run.
Identical audio + model + options map to one dedup key, and the key to at most
one live or finished run, so the model never runs twice for the same question:

- no run, or the last one failed  -> a new run is created and must be published
- a run is queued or running       -> the job joins it (coalesced)
- a run has succeeded              -> the job reuses its output at once (cache)

A job's status is derived from its run (plus its own cancellation), so joining,
finishing and failing are single atomic writes however many jobs share a run.

Jobs, runs and a run's place in the queue are typed classes (``domain``), stored as
JSON documents by ``records``; every change of a run's state is ``lifecycle``'s, which
also counts the runs waiting per priority (``depth``): a new run past
``max_queued_<priority>`` is refused with Overloaded (HTTP 429). Which waiting run
starts next is the ``scheduler``'s.
"""

from emotionq.jobs.access import cancel, load, take_back
from emotionq.jobs.channels import check_channels
from emotionq.jobs.domain import CANCELED, FAILED, QUEUED, RUNNING, SUCCEEDED, TERMINAL, Job, Run, status_of
from emotionq.jobs.lifecycle import queue_depth
from emotionq.jobs.records import dedup_key, job_key, new_id, run_key
from emotionq.jobs.running import (
    Claim,
    claim,
    complete,
    expire_lease,
    fail,
    record_decoded,
    requeue,
    stop_if_unwanted,
)
from emotionq.jobs.submission import Submission, abandon_run, mark_filed, submit
from emotionq.jobs.view import iso, view

__all__ = [
    "check_channels",
    "CANCELED", "FAILED", "QUEUED", "RUNNING", "SUCCEEDED", "TERMINAL", "Claim", "Job", "Run", "Submission",
    "abandon_run", "mark_filed", "cancel", "claim", "complete", "dedup_key", "expire_lease", "fail", "iso", "job_key",
    "load", "new_id", "queue_depth", "record_decoded", "requeue", "run_key", "status_of", "stop_if_unwanted",
    "submit", "take_back", "view",
]
