"""What the client tests share: one running service (API and worker on RabbitMQ and Redis, the tiny model)
for the whole package, with an API key, and a folder of recordings it has never seen."""

from __future__ import annotations

import pytest

from audio_factory import distinct_clips
from harness import running


@pytest.fixture(scope="package")
def service(tmp_path_factory, tiny_model_dir, amqp_url, redis_url):
    with running(tmp_path_factory.mktemp("client"), model=tiny_model_dir, broker=amqp_url, store=redis_url) as svc:
        svc.key = svc.create_key("cli")
        yield svc


@pytest.fixture
def folder(tmp_path, speech_wav):
    """Three recordings this service has never seen, one in a subfolder, plus a file that is not audio."""
    clips = distinct_clips(speech_wav, tmp_path, 3)
    (tmp_path / "day2").mkdir()
    clips[2].rename(tmp_path / "day2" / clips[2].name)
    (tmp_path / "notes.txt").write_text("not a recording: skipped by suffix")
    return tmp_path
