"""The worker's scoring of runs, called directly on a real store, blob store and the tiny model."""

from __future__ import annotations

import time

import pytest

import harness
from emotionq import jobs
from emotionq.blobs.local import LocalBlobs
from emotionq.errors import RunTimeLimit
from emotionq.store import open_store
from emotionq.worker import scoring


@pytest.fixture(scope="module")
def model(tiny_model_dir, runtime_cache_dir):
    from emotionq.inference import EmotionModel

    return EmotionModel.load(str(tiny_model_dir), device="cpu", threads=1, runtime_cache_dir=runtime_cache_dir)


def _queued_run(store, blobs, settings, path, *, claims_s: float) -> str:
    writer = blobs.writer(max_bytes=10**8)
    writer.write(path.read_bytes())
    writer.close()
    sub = jobs.submit(store, settings=settings, client="c", priority="low", options={},
                      input={"filename": path.name, "content_type": None, "bytes": 1, "duration_s": claims_s,
                             "sha256": writer.sha256}, metadata={}, model="m")
    writer.commit(sub.run.blob)  # as the intake does: after the store accepted the job
    return sub.run.id


def test_time_limit_follows_the_decoded_audio_not_the_header(tmp_path, model, speech_wav):
    """A header may claim an hour: the run is still held to the limit of the 3 s it holds."""
    store, blobs = open_store(f"sqlite:///{tmp_path / 's.sqlite3'}"), LocalBlobs(tmp_path / "blobs")
    settings = harness.settings(soft_time_limit_base=5, soft_time_limit_per_audio_second=1, batch_size=1)
    run_id = _queued_run(store, blobs, settings, speech_wav, claims_s=3540)
    assert settings.time_limits(3540)[0] > 1000  # what Celery's soft limit would be, from the header
    with pytest.raises(RunTimeLimit, match="limit for 3 s of audio"):
        scoring.score_runs(store=store, blobs=blobs, models={"emotion2vec": model}, settings=settings, hard_limit_s=60,
                           members=[scoring.Member(run_id, "task-1")], worker="w", started=time.monotonic() - 9)
    assert store.get(f"run:{run_id}")["decoded_duration_s"] == pytest.approx(3.0, abs=0.01)


def test_a_batch_asks_whether_its_runs_are_wanted_at_most_every_quarter_second(tmp_path, speech_wav, monkeypatch):
    """One window a pass on a CPU makes many passes: the store is read per run at most every WANTED_CHECK_S,
    and a cancel is still seen once that has passed."""
    store, blobs = open_store(f"sqlite:///{tmp_path / 's.sqlite3'}"), LocalBlobs(tmp_path / "blobs")
    settings = harness.settings(batch_size=1)
    run_id = _queued_run(store, blobs, settings, speech_wav, claims_s=3)
    claim = jobs.claim(store, run_id=run_id, task_id="task-1", worker="w", max_deliveries=5, hard_limit_s=60)
    assert claim.go
    reads = []
    real = jobs.stop_if_unwanted
    monkeypatch.setattr(jobs, "stop_if_unwanted", lambda store, **kw: reads.append(kw) or real(store, **kw))
    watch = scoring._Watch(store, [scoring.Member(run_id, "task-1")], settings=settings, started=time.monotonic(),
                           audio_s=3)

    assert watch() == set() and len(reads) == 1
    [job_id] = claim.run.jobs
    jobs.cancel(store, job_id=job_id, client="c")
    assert watch() == set() and len(reads) == 1  # within the quarter second: not asked again
    time.sleep(scoring.WANTED_CHECK_S)
    assert watch() == {0} and len(reads) == 2
    assert store.get(f"run:{run_id}")["state"] == "canceled"
