"""Per-client limits against a real API and Redis: a client over its rate gets 429 with Retry-After and
the RateLimit headers while another client is served, and the cap on waiting jobs holds under
concurrent uploads. Both are set per client with `emotionq keys limits`."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys

import pytest

from audio_factory import distinct_clips
from harness import ROOT, running

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_model_dir, redis_url):
    with running(tmp_path_factory.mktemp("limits"), model=tiny_model_dir, store=redis_url, worker=False) as svc:
        yield svc


def _limits(service, client, *args):
    out = subprocess.run([sys.executable, "-m", "emotionq.cli", "keys", "limits", client, *args], cwd=ROOT,
                         env=service.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_client_over_its_rate_is_refused_and_another_is_not(service):
    assert "rate 2/s (burst 3)" in _limits(service, "hasty", "--rate", "2", "--burst", "3")
    hasty, calm = service.as_client("hasty"), service.as_client("calm")
    answers = [hasty.get("/v1/jobs/job_none") for _ in range(6)]
    assert [r.status_code for r in answers[:3]] == [404] * 3  # within the burst: nothing changes
    refused = [r for r in answers if r.status_code == 429]
    assert refused and "ratelimit" not in answers[0].headers
    for r in refused:
        assert r.json()["code"] == "rate_limited" and int(r.headers["retry-after"]) >= 1
        assert r.headers["ratelimit-policy"] == '"requests";q=3;w=2'
        assert r.headers["ratelimit"].startswith('"requests";r=0;t=')
    assert calm.get("/v1/jobs/job_none").status_code == 404  # the same moment, another client
    assert "rate 0/s" in _limits(service, "hasty", "--reset")
    assert hasty.get("/v1/jobs/job_none").status_code == 404


def test_the_cap_on_waiting_jobs_holds_under_concurrent_uploads(service, speech_wav, tmp_path):
    _limits(service, "bulk", "--max-waiting", "3")
    bulk = service.as_client("bulk")
    clips = distinct_clips(speech_wav, tmp_path, 10)

    def upload(path):
        with open(path, "rb") as f:
            return bulk.post("/v1/jobs", files={"file": (path.name, f)})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(upload, clips))
    assert sorted(r.status_code for r in answers) == [202] * 3 + [429] * 7
    for r in answers:
        if r.status_code == 429:
            assert r.json()["code"] == "too_many_waiting" and r.headers["ratelimit-policy"] == '"waiting";q=3'
    accepted = next(c for c, r in zip(clips, answers) if r.status_code == 202)
    assert upload(accepted).status_code == 202  # joining a waiting job adds no work: still accepted
    other = service.as_client("other-bulk")
    with open(clips[-1], "rb") as f:
        assert other.post("/v1/jobs", files={"file": (clips[-1].name, f)}).status_code == 202
