"""Jobs and runs stored by earlier versions load unchanged: ``fixtures/main_documents.json`` holds documents
that main at f985a3a wrote (its jobs.submit, mark_filed, dispatch, claim, record_decoded, complete, fail,
cancel, requeue and lease expiry, on SQLite: the same JSON as in Redis), one case per state and place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emotionq import jobs
from emotionq.jobs.domain import Backlog, Dispatched, Filing, Job, Retrying, Run

CASES = json.loads((Path(__file__).parent / "fixtures" / "main_documents.json").read_text())["cases"]
PLACES = {"filing": Filing, "joined_low": Filing, "coalesced_high_filing": Filing, "coalesced_high_backlog": Backlog,
          "dispatched": Dispatched, "dispatched_first": Dispatched, "requeued": Retrying}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_stored_job_and_run_read_as_types_and_write_back_the_same_documents(case):
    docs = CASES[case]
    run, job = Run.from_doc(docs["run"]), Job.from_doc(docs["job"])
    assert run.to_doc() == docs["run"] and job.to_doc() == docs["job"]
    assert isinstance(run.queue, PLACES[case]) if case in PLACES else run.queue is None
    assert job.run_id == run.id and run.state == docs["run"]["state"]


def _store_main_documents(store) -> None:
    def tx_put(tx):
        for docs in CASES.values():
            tx.put(f"run:{docs['run']['id']}", docs["run"])
            tx.put(f"job:{docs['job']['id']}", docs["job"])

    store.transact(tx_put)


def test_stored_jobs_load_view_and_move_on(store):
    _store_main_documents(store)
    for case, docs in CASES.items():
        job, run = jobs.load(store, job_id=docs["job"]["id"], client=docs["job"]["client"])
        view = jobs.view(job, run)
        assert view["status"] == ("canceled" if docs["job"]["canceled_at"] else docs["run"]["state"]), case
        assert view["dedup"]["run_id"] == docs["run"]["id"]
    filing = CASES["filing"]["run"]["id"]
    assert isinstance(jobs.mark_filed(store, run_id=filing).queue, Backlog)  # a held run enters its backlog
    retrying = CASES["requeued"]["run"]["id"]
    claim = jobs.claim(store, run_id=retrying, task_id="t2", worker="w", max_deliveries=3, hard_limit_s=60)
    assert claim.go and claim.run.state == "running" and claim.run.deliveries == 1
    stored = store.get(f"run:{retrying}")
    assert stored["queue"] is None and stored["retries"] == 1 and stored["owner"] == "t2"
