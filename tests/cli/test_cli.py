"""The `emotionq` command: `run` serves in the foreground and stops cleanly on Ctrl-C; `model init`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from harness import ROOT, free_port

pytestmark = pytest.mark.timeout(300)


def test_run_serves_then_ctrl_c_stops_everything(tmp_path, tiny_model_dir, speech_wav):
    port = free_port()
    env = {**os.environ, "EMOTIONQ_BROKER_URL": "", "EMOTIONQ_STORE_URL": "", "EMOTIONQ_PORT": str(port),
           "EMOTIONQ_VAR_DIR": str(tmp_path / "var"), "EMOTIONQ_MODEL": str(tiny_model_dir),
           "EMOTIONQ_DEVICES": "cpu", "EMOTIONQ_TORCH_THREADS": "1", "EMOTIONQ_AUTH": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "emotionq.cli", "run"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.5)
        with open(speech_wav, "rb") as f:
            r = httpx.post(f"{url}/v1/jobs", files={"file": f}, headers={"Prefer": "wait=60"}, timeout=90)
        assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
        code = proc.wait(timeout=60)
    output = proc.stdout.read()
    assert "EMBEDDED mode" in output and "API keys are NOT required" in output
    assert code == 0, output[-3000:]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=2)
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], "child processes survived Ctrl-C"


def test_model_init_writes_a_checkpoint_funasr_loads(tmp_path):
    out = subprocess.run([sys.executable, "-m", "emotionq.cli", "model", "init", str(tmp_path / "m"),
                          "--arch", "tiny"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert {"config.yaml", "model.pt", "tokens.txt", "emotionq.json"} <= {p.name for p in (tmp_path / "m").iterdir()}


def test_worker_with_a_model_it_cannot_load_stops_instead_of_taking_jobs(tmp_path):
    env = {**os.environ, "EMOTIONQ_BROKER_URL": "", "EMOTIONQ_STORE_URL": "", "EMOTIONQ_DEVICES": "cpu",
           "EMOTIONQ_VAR_DIR": str(tmp_path / "var"), "EMOTIONQ_MODEL": str(tmp_path / "no-such-model")}
    out = subprocess.run([sys.executable, "-m", "emotionq.cli", "worker"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "cannot serve" in out.stdout + out.stderr and "no-such-model" in out.stdout + out.stderr
