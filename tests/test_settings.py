"""Settings' lists: read from one variable each, comma-separated as they always were, and typed once here."""

from __future__ import annotations

import ipaddress

import pytest

from emotionq.cli import supervisor
from emotionq.settings import Settings

LISTS = ("DEVICES", "WEBHOOK_ALLOW_NETWORKS", "AUDIO_URL_ALLOW_NETWORKS", "AUDIO_URL_HOSTS", "AUDIO_URL_S3_BUCKETS",
         "WEBHOOK_RETRY_SCHEDULE")


@pytest.fixture(autouse=True)
def _unset(monkeypatch):
    for name in LISTS:
        monkeypatch.delenv(f"EMOTIONQ_{name}", raising=False)


def test_comma_separated_variables_become_typed_lists(monkeypatch):
    monkeypatch.setenv("EMOTIONQ_DEVICES", "cuda:0, cuda:1")
    monkeypatch.setenv("EMOTIONQ_WEBHOOK_ALLOW_NETWORKS", "127.0.0.1/8,::1/128")  # host bits allowed, as before
    monkeypatch.setenv("EMOTIONQ_AUDIO_URL_HOSTS", "*.Example.com,audio.example.org")
    monkeypatch.setenv("EMOTIONQ_AUDIO_URL_S3_BUCKETS", "calls/2026,,archive")
    monkeypatch.setenv("EMOTIONQ_WEBHOOK_RETRY_SCHEDULE", "0,1.5,30")
    s = Settings(_env_file=None)
    assert s.devices == ["cuda:0", "cuda:1"] and supervisor.devices(s) == ["cuda:0", "cuda:1"]
    assert s.webhook_allow_networks == [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
    assert s.audio_url_hosts == ["*.example.com", "audio.example.org"]
    assert s.audio_url_s3_buckets == ["calls/2026", "archive"]
    assert s.webhook_retry_schedule == (0.0, 1.5, 30.0)


def test_unset_lists_keep_their_defaults_and_a_bad_network_is_refused(monkeypatch):
    s = Settings(_env_file=None)
    assert s.devices == ["auto"] and s.audio_url_allow_networks == [] and s.audio_url_hosts == []
    assert s.webhook_retry_schedule[:3] == (0, 5, 300) and len(s.webhook_retry_schedule) == 10
    assert Settings(_env_file=None, webhook_retry_schedule="").webhook_retry_schedule == ()
    monkeypatch.setenv("EMOTIONQ_AUDIO_URL_ALLOW_NETWORKS", "10.0.0.0/8,not-a-network")
    with pytest.raises(ValueError, match="not-a-network"):
        Settings(_env_file=None)


def test_auto_devices_are_found_when_asked_for():
    found = supervisor.devices(Settings(_env_file=None, devices="auto"))
    assert found == ["cpu"] or all(d.startswith("cuda:") for d in found)
