"""Shared fixtures: the real RabbitMQ and Redis of this machine, isolated per test session."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest
import redis


def _own_redis_per_xdist_worker() -> None:
    """Under pytest-xdist (``make test`` runs the fast step in several processes) each worker process but the
    first gets a Redis server of its own, all 16 databases: modules use fixed databases (``fresh_redis_db``)
    and every service announces its worker under this machine's name, so two services running at once must
    not share a server. RabbitMQ needs nothing: every service has a virtual host of its own. A Redis named by
    ``EMOTIONQ_TEST_REDIS_URL`` is used by every process as it is: run with ``TEST_PROCS=0`` then."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    if worker == "gw0" or "EMOTIONQ_TEST_REDIS_URL" in os.environ:
        return
    from servers import PrivateRedis

    workdir = tempfile.mkdtemp(prefix=f"emotionq-redis-{worker}-")
    server = PrivateRedis(workdir, aof=False)
    server.start()
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    atexit.register(server.close)  # runs first
    os.environ["EMOTIONQ_TEST_REDIS_URL"] = f"redis://127.0.0.1:{server.port}/13"


_own_redis_per_xdist_worker()  # before harness reads the URL

from emotionq.store import open_store  # noqa: E402
from harness import REDIS_URL, fresh_redis_db, rabbitmq_vhost  # noqa: E402


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis database of its own, emptied before the session."""
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    client.flushdb()
    return REDIS_URL


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
def sensevoice_dir(tmp_path_factory):
    """An untrained tiny SenseVoiceSmall checkpoint, written by `emotionq model init --arch sensevoice-tiny`."""
    from click.testing import CliRunner

    from emotionq.cli import main

    path = tmp_path_factory.mktemp("sensevoice_tiny")
    result = CliRunner().invoke(main, ["model", "init", str(path), "--arch", "sensevoice-tiny"])
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="session")
def two_speakers(tmp_path_factory):
    """Two espeak-ng voices taking turns, with silences between: (path, the spoken texts in order)."""
    import subprocess

    tmp = tmp_path_factory.mktemp("two_speakers")
    turns = [("en-us+m3", "Good morning, I am calling about my order."),
             ("en-gb+f2", "Thank you for calling, how can I help?")]
    parts = [str(tmp / "silence.wav")]
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", parts[0], "trim", "0", "0.6"], check=True)
    for i, (voice, text) in enumerate(turns):
        spoken = tmp / f"turn{i}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(spoken), text], check=True, capture_output=True)
        subprocess.run(["sox", str(spoken), "-r", "16000", "-c", "1", "-b", "16", str(tmp / f"t{i}.wav")],
                       check=True)
        parts += [str(tmp / f"t{i}.wav"), parts[0]]
    path = tmp / "two_speakers.wav"
    subprocess.run(["sox", *parts, str(path)], check=True)
    return path, [text for _, text in turns]


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory):
    """3 s of real synthetic speech at 22.05 kHz (the worker resamples it)."""
    from audio_factory import make_speech

    return make_speech(tmp_path_factory.mktemp("speech") / "speech.wav", seconds=3.0, rate=22050)


@pytest.fixture(scope="module")
def receiver():
    """A webhook receiver on loopback (``webhook_receiver.Receiver``), one per test module."""
    from webhook_receiver import Receiver

    r = Receiver()
    yield r
    r.close()
