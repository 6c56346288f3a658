"""Batching in the worker, end to end on the real RabbitMQ, Redis and funasr: jobs waiting for a
worker are scored together, each result matches scoring it alone, a bad file fails alone, and a
killed worker's whole batch is redelivered. (Strict priority with batching on is
tests/test_priority.py: batching is on by default.)"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import redis
import soundfile as sf

from audio_factory import distinct_clips
from harness import fresh_redis_db, running, settings, stored_run

pytestmark = [pytest.mark.slow, pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.timeout(600)]

BATCH = 4


@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_model_dir):
    store = fresh_redis_db(9)
    with running(tmp_path_factory.mktemp("batching"), model=tiny_model_dir, store=store, worker=False,
                 batch_size=BATCH, batch_wait_ms=20) as svc:
        svc.store_url = store
        yield svc


@pytest.fixture
def service(api):
    """The API; each test queues its jobs, then starts the worker, which stops after the test."""
    yield api
    if "worker" in api.procs:
        api.stop("worker")


def _queue(service, clips) -> list[str]:
    ids = []
    for clip in clips:
        r = service.submit(clip)
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    return ids


def _mixed_clips(speech_wav, directory, count: int) -> list:
    """Clips of 1 to 3 s that no test has sent before, so a batch pads."""
    data, rate = sf.read(speech_wav, dtype="int16")
    clips = []
    for k in range(count):
        part = directory / f"part-{k:03d}"
        part.mkdir()
        sf.write(part / "speech.wav", data[: int(rate * (1 + 2 * k / max(1, count - 1)))], rate, subtype="PCM_16")
        clips += distinct_clips(part / "speech.wav", part, 1)
    return clips


def test_waiting_jobs_are_scored_together_and_match_scoring_alone(service, speech_wav, tmp_path, tiny_model_dir,
                                                                  runtime_cache_dir):
    from emotionq.inference import EmotionModel
    from emotionq.inference.audio import decode

    clips = _mixed_clips(speech_wav, tmp_path, 2 * BATCH)
    ids = _queue(service, clips)
    service.start_worker()
    done = [service.finish(job_id) for job_id in ids]
    assert {j["status"] for j in done} == {"succeeded"}, done
    sizes = [j["output"]["timing"]["batch_size"] for j in done]
    assert max(sizes) == BATCH, sizes  # a backlog fills whole batches

    alone = EmotionModel.load(str(tiny_model_dir), device="cpu", threads=1, runtime_cache_dir=runtime_cache_dir)
    for clip, job in zip(clips, done):  # speech segments (the default): each as the model scores it alone
        samples = decode(clip)
        assert job["output"]["segments"], job["output"]
        for segment in job["output"]["segments"]:
            expected = alone.predict(samples[round(segment["start"] * 16000):round(segment["end"] * 16000)])["scores"]
            got = segment["scores"]
            assert max(abs(got[k] - expected[k]) for k in expected) < 1e-5


def test_a_bad_file_in_a_batch_fails_alone(service, speech_wav, tmp_path):
    good = _mixed_clips(speech_wav, tmp_path, 3)
    nan = tmp_path / "nan.wav"
    samples = np.random.default_rng().standard_normal(16000).astype("float32") * 0.1
    samples[500] = np.nan
    sf.write(nan, samples, 16000, subtype="FLOAT")
    ids = _queue(service, [good[0], nan, good[1], good[2]])
    service.start_worker()
    done = [service.finish(job_id) for job_id in ids]
    assert [j["status"] for j in done] == ["succeeded", "failed", "succeeded", "succeeded"]
    assert done[1]["error"]["code"] == "audio_not_finite"
    assert {j["output"]["timing"]["batch_size"] for j in done if j["output"]} == {3}


def test_a_killed_worker_s_whole_batch_is_redelivered(service, tmp_path):
    from audio_factory import make_speech

    clips = distinct_clips(make_speech(tmp_path / "long.wav", seconds=12.0), tmp_path, BATCH)
    ids = _queue(service, clips)
    service.start_worker()
    client = redis.Redis.from_url(service.store_url)
    runs = [service.job(j)["dedup"]["run_id"] for j in ids]
    deadline = time.monotonic() + 120
    while not all(stored_run(client, r).state == "running" for r in runs):
        assert time.monotonic() < deadline, "the batch never started"
        time.sleep(0.01)
    _, child = service.inference_worker_pids()
    os.kill(child, signal.SIGKILL)

    done = [service.finish(job_id) for job_id in ids]
    assert [j["status"] for j in done] == ["succeeded"] * BATCH, done
    assert [stored_run(client, r).deliveries for r in runs] == [2] * BATCH


def test_settings_refuse_a_batch_budget_that_outruns_the_first_jobs_time_limit():
    """A batch runs under its first job's soft limit, so the audio it may add must fit that limit's base."""
    from pydantic import ValidationError

    settings(batch_max_audio_s=120, soft_time_limit_base=60, soft_time_limit_per_audio_second=0.5)
    with pytest.raises(ValidationError, match="EMOTIONQ_BATCH_MAX_AUDIO_S"):
        settings(batch_max_audio_s=300, soft_time_limit_base=60, soft_time_limit_per_audio_second=0.5)
    settings(batch_size=1, batch_max_audio_s=300)  # batching off: no batch to fit
