"""Shared fixtures: the real RabbitMQ and Redis of this machine, isolated per test session."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """A RabbitMQ virtual host of its own, deleted after the session."""
    vhost = f"emotionq-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                   check=True, capture_output=True)
    yield f"{AMQP_URL}/{vhost}"
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store(request, tmp_path):
    """Each store backend, empty."""
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    else:
        url = request.getfixturevalue("redis_url")
        redis.Redis.from_url(url).flushdb()
        s = open_store(url)
    yield s
    s.close()
