"""`make loadtest` against the service `make run` starts (embedded mode, the untrained tiny model), for
a few seconds: it drives uploads, repeats and long polls, and prints its report per request type."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
import pytest

from harness import ROOT, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def make_run(tmp_path_factory):
    """`make run`, as the README says to start the service, on a free port and a var directory of its own."""
    port = free_port()
    env = {**os.environ, "EMOTIONQ_PORT": str(port), "EMOTIONQ_VAR_DIR": str(tmp_path_factory.mktemp("make-run")),
           "EMOTIONQ_BROKER_URL": "", "EMOTIONQ_STORE_URL": "", "EMOTIONQ_TORCH_THREADS": "1"}
    log = open(tmp_path_factory.getbasetemp() / "make-run.log", "wb")
    proc = subprocess.Popen(["make", "run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, "make run exited"
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "make run's service was not ready in 180 s"
        time.sleep(1)
    yield url, env
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def test_make_loadtest_reports_each_request_type(make_run):
    url, env = make_run
    out = subprocess.run(["make", "loadtest", f"LOADTEST_URL={url}", "LOADTEST_USERS=3", "LOADTEST_TIME=12s"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = out.stdout[out.stdout.index("emotionq load test against"):]
    rows = {line.rsplit(maxsplit=6)[0]: line.split()[-6:] for line in report.splitlines()[2:] if line.strip()
            and not line.startswith(("Type", "---", " ")) and len(line.split()) > 6 and line.split()[-6].isdigit()}
    uploads = [r for name, r in rows.items() if name.startswith("POST /v1/jobs")]
    assert uploads and all(float(r[1]) == 100.0 for r in uploads), report  # every upload answered 2xx
    assert any(name.startswith("job: upload to result") for name in rows), report
    assert any(name.startswith("GET /v1/jobs/{id}") for name in rows) or "repeat" in report, report
    # A high job is followed through its events; a stream is reported once it ends (one still open when the
    # run stops is not), so the SSE row is there once a high job has finished, each stream answered 2xx.
    high_done = any(name.startswith("job: upload to result (new high)") for name in rows)
    streams = [r for name, r in rows.items() if name.startswith("GET /v1/jobs/{id}/events (SSE)")]
    assert (streams or not high_done) and all(float(r[1]) == 100.0 for r in streams), report
    assert "p50 ms" in report and "p95 ms" in report and "p99 ms" in report and "per s" in report
