"""Jobs and runs stored by earlier versions load unchanged: ``fixtures/main_documents.json`` holds documents
that main at f985a3a wrote (its jobs.submit, mark_filed, dispatch, claim, record_decoded, complete, fail,
cancel, requeue and lease expiry, on SQLite: the same JSON as in Redis), one case per state and place.
They are written back compact (``emotionq.jobs.domain``) and read back the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emotionq import jobs
from emotionq.jobs import records
from emotionq.jobs.domain import Backlog, Dispatched, Filing, Job, Retrying, Run
from emotionq.store.redis import encode

CASES = json.loads((Path(__file__).parent / "fixtures" / "main_documents.json").read_text())["cases"]
PLACES = {"filing": Filing, "joined_low": Filing, "coalesced_high_filing": Filing, "coalesced_high_backlog": Backlog,
          "dispatched": Dispatched, "dispatched_first": Dispatched, "requeued": Retrying}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_stored_job_and_run_read_as_types_and_write_back_compact_documents_that_read_the_same(case):
    docs = CASES[case]
    run = records.run_from_doc(docs["run"], docs["run"]["id"])
    job = records.job_from_doc(docs["job"], docs["job"]["id"])
    assert isinstance(run.queue, PLACES[case]) if case in PLACES else run.queue is None
    assert job.run_id == run.id and run.state == docs["run"]["state"] and run.key == docs["run"]["key"]
    compact_run, compact_job = records.run_doc(run), job.to_doc()
    assert records.run_from_doc(compact_run, run.id) == run
    again = records.job_from_doc(compact_job, job.id)
    assert jobs.view(again, run) == jobs.view(job, run)  # the audio's facts and the options, now the run's
    assert None not in compact_run.values() and None not in compact_job.values()
    assert len(encode(compact_run)) < 0.7 * len(encode(docs["run"]))
    assert len(encode(compact_job)) < 0.7 * len(encode(docs["job"]))


def test_a_waiting_run_and_its_job_fit_small_documents():
    """What every waiting job keeps in the store: its run's document in 512 bytes, its own in 256 (Redis
    allocates in size classes: these are the classes the figures of docs/operating/benchmarks.md count)."""
    options = {"granularity": "utterance", "embedding": False, "segmentation": "vad", "channels": "mix",
               "vad_threshold": 0.5, "min_speech_ms": 250, "min_silence_ms": 500, "speech_pad_ms": 30}
    run = Run(id=records.new_id("run"), key="", sha256="ab" * 32, model="iic/emotion2vec_plus_large@default",
              options=options, duration_s=12.345, priority="low", client="client-007",
              jobs=[records.new_id("job")], created_at=1796624096.0968356, blob="b9d47f693bdc",
              queue=Backlog(priority="low", client="client-007", seq=123456))
    run.key = records.dedup_key(sha256=run.sha256, model=run.model, options=options)
    job = Job(id=run.jobs[0], client=run.client, priority="low", options=options, metadata={}, run_id=run.id,
              created_at=1796624096.0968356, input={"filename": "call-2026-12-07-0001.wav", "content_type": "audio/wav",
                                                   "bytes": 395_044, "duration_s": 12.345, "channels": 1,
                                                   "sha256": run.sha256})
    assert len(encode(records.run_doc(run))) <= 500 and len(encode(job.to_doc())) <= 250
    assert records.run_from_doc(records.run_doc(run), run.id) == run
    view = jobs.view(records.job_from_doc(job.to_doc(), job.id), run)
    assert view["input"] == job.input and list(view["input"]) == list(job.input)
    assert view["options"] == options and view["priority"] == "low"


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
    assert "queue" not in stored and stored["retries"] == 1 and stored["owner"] == "t2"
