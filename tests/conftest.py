"""Shared fixtures: the real RabbitMQ and Redis of this machine, isolated per test session."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid

import pytest
import redis

from emotionq.store import open_store

AMQP_URL = os.environ.get("EMOTIONQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")
REDIS_URL = os.environ.get("EMOTIONQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis database of its own, emptied before the session."""
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    client.flushdb()
    return REDIS_URL


def fresh_redis_db(db: int) -> str:
    """The URL of Redis database ``db`` of the machine's Redis, emptied: for a module that counts
    what is queued (the store keeps one queue-depth counter per database)."""
    url = REDIS_URL.rsplit("/", 1)[0] + f"/{db}"
    redis.Redis.from_url(url).flushdb()
    return url


@contextlib.contextmanager
def rabbitmq_vhost():
    """A RabbitMQ virtual host of its own (so no test sees another's queues), deleted afterwards."""
    vhost = f"emotionq-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                   check=True, capture_output=True)
    try:
        yield f"{AMQP_URL}/{vhost}"
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)


@pytest.fixture(scope="session")
def amqp_url():
    with rabbitmq_vhost() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store(request, tmp_path):
    """Each store backend, empty."""
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    else:
        s = open_store(fresh_redis_db(14))  # not the services' database: this one is emptied per test
    yield s
    s.close()


@pytest.fixture(scope="session", autouse=True)
def runtime_cache_dir(tmp_path_factory):
    """One onnx graph cache for the session, shared by the services' workers (each exports once per checkpoint)."""
    path = tmp_path_factory.mktemp("onnx-cache")
    os.environ["EMOTIONQ_RUNTIME_CACHE_DIR"] = str(path)
    yield path
    os.environ.pop("EMOTIONQ_RUNTIME_CACHE_DIR", None)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """An untrained tiny emotion2vec checkpoint that funasr loads from disk."""
    from emotionq.inference import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("emotion2vec_tiny"), arch="tiny", seed=0)


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory):
    """3 s of real synthetic speech at 22.05 kHz (the worker resamples it)."""
    from audio_factory import make_speech

    return make_speech(tmp_path_factory.mktemp("speech") / "speech.wav", seconds=3.0, rate=22050)


def distinct_clips(source, directory, count: int) -> list:
    """``count`` recordings no test has sent before: ``source`` plus k + 1 samples of near-silence."""
    import numpy as np
    import soundfile as sf

    data, rate = sf.read(source, dtype="int16")
    salt = np.random.default_rng().integers(1, 1000, size=8).astype("int16")  # unique to this call
    paths = []
    for k in range(count):
        path = directory / f"clip-{k:03d}.wav"
        tail = np.concatenate([np.zeros(k + 1, dtype="int16"), salt])
        sf.write(path, np.concatenate([data, tail]), rate, subtype="PCM_16")
        paths.append(path)
    return paths
