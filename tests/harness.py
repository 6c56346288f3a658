"""Runs the real emotionq processes (API, workers, celery CLI) for integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """The API (uvicorn) and the worker launcher (`emotionq worker`) as real subprocesses."""

    def __init__(self, *, env: dict[str, str], workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.env = {**os.environ, "EMOTIONQ_PORT": str(self.port), "EMOTIONQ_DEVICES": "cpu",
                    "EMOTIONQ_TORCH_THREADS": "1", "PYTHONUNBUFFERED": "1", **env}
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.workdir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "emotionq.cli", *args], cwd=ROOT,
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def start_api(self) -> None:
        self._spawn("api", "api")
        self._wait(lambda: httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200, 60, "api")

    def start_worker(self, *, wait: bool = True) -> None:
        self._spawn("worker", "worker")
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 120) -> dict:
        self._wait(lambda: httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200, timeout, "worker")
        return httpx.get(f"{self.url}/readyz", timeout=5).json()

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError(f"{name} did not stop within {timeout} s")

    def stop_all(self) -> None:
        for name in list(self.procs):
            try:
                self.stop(name)
            except AssertionError:
                pass

    def celery(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "celery", "-A", "emotionq", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _wait(self, ready, timeout: float, name: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)[-3000:]}")
            try:
                if ready():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"{name} not ready after {timeout} s:\n{self.log(name)[-3000:]}")

    # -- the HTTP API -----------------------------------------------------------

    def submit(self, path: Path, *, headers: dict | None = None, **fields) -> httpx.Response:
        with open(path, "rb") as f:
            return httpx.post(f"{self.url}/v1/jobs", files={"file": (path.name, f)},
                              data={k: str(v) for k, v in fields.items()}, headers=headers or {}, timeout=120)

    def job(self, job_id: str, *, wait: float = 0) -> dict:
        headers = {"Prefer": f"wait={wait:g}"} if wait else {}
        r = httpx.get(f"{self.url}/v1/jobs/{job_id}", headers=headers, timeout=wait + 30)
        r.raise_for_status()
        return r.json()

    def finish(self, job_id: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id, wait=min(30, max(1, deadline - time.monotonic())))
            if job["status"] in ("succeeded", "failed", "canceled") or time.monotonic() > deadline:
                return job
