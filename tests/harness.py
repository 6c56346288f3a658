"""Runs the real emotionq processes (API, workers, celery CLI) for integration tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import redis

from emotionq.queues import INFER_TASK, INFERENCE_QUEUE

ROOT = Path(__file__).resolve().parents[1]
AMQP_URL = os.environ.get("EMOTIONQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")
REDIS_URL = os.environ.get("EMOTIONQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


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


def settings(**values):
    """emotionq's settings for a test: these values and the defaults; a local ``.env`` is never read."""
    from emotionq.settings import Settings

    return Settings(_env_file=None, **values)


@contextlib.contextmanager
def running(workdir: Path, *, model, broker: str = "vhost", store: str = REDIS_URL, worker: bool = True,
            env: dict[str, str] | None = None, **settings) -> Iterator[Service]:
    """A service whose API (and worker, unless ``worker=False``) run for the block, then stop.

    ``broker``: an amqp:// URL, ``"vhost"`` for a RabbitMQ virtual host of its own (deleted
    afterwards), or ``""`` with ``store=""`` for embedded mode; ``settings`` by name, as in
    ``Service.distributed``; ``env``, other environment variables of its processes.
    """
    with contextlib.ExitStack() as stack:
        if broker == "vhost":
            broker = stack.enter_context(rabbitmq_vhost())
        svc = Service.distributed(workdir, broker=broker, store=store, model=model, **settings)
        svc.env.update(env or {})
        stack.callback(svc.stop_all)
        svc.start_api()
        if worker:
            svc.start_worker()
        yield svc


def stored_run(client: redis.Redis, run_id: str):
    """The run ``run_id`` as the service stored it, read the way emotionq reads it (``emotionq.jobs.Run``): compact
    documents leave out members at their defaults (a queued run's has no ``state``, a fresh one no ``deliveries``)."""
    from emotionq.jobs import Run

    return Run.from_doc(json.loads(client.get(f"emotionq:run:{run_id}")), id=run_id, key="")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


class Service:
    """The API (uvicorn) and the worker launcher (`emotionq worker`) as real subprocesses."""

    def __init__(self, *, env: dict[str, str], workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.env = {**os.environ, "EMOTIONQ_PORT": str(self.port), "EMOTIONQ_DEVICES": "cpu",
                    "EMOTIONQ_TORCH_THREADS": "1", "PYTHONUNBUFFERED": "1", **env}
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.http = httpx.Client(base_url=self.url, timeout=120)

    @classmethod
    def distributed(cls, workdir: Path, *, broker: str, store: str, model, **settings) -> Service:
        """A service on ``broker`` and ``store`` (empty strings: embedded mode) serving ``model``, its
        files under ``workdir``; ``settings`` are emotionq settings by name (``max_deliveries=2``)."""
        env = {"EMOTIONQ_BROKER_URL": broker, "EMOTIONQ_STORE_URL": store,
               "EMOTIONQ_VAR_DIR": str(workdir / "var"), "EMOTIONQ_MODEL": str(model)}
        env.update({f"EMOTIONQ_{name.upper()}": str(value) for name, value in settings.items()})
        return cls(env=env, workdir=workdir)

    def create_key(self, client: str) -> str:
        """A new API key for ``client``, made by the real `emotionq keys create`."""
        out = subprocess.run([sys.executable, "-m", "emotionq.cli", "keys", "create", client], cwd=ROOT,
                             env=self.env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def as_client(self, client: str) -> httpx.Client:
        """An HTTP client of the API that authenticates as ``client`` with a new key."""
        return httpx.Client(base_url=self.url, timeout=120,
                            headers={"Authorization": f"Bearer {self.create_key(client)}"})

    def spawn(self, name: str, *args: str) -> None:
        log = open(self.workdir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "emotionq.cli", *args], cwd=ROOT,
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def start_api(self) -> None:
        """Start the API; ``self.http`` then calls it as the client 'tests' (unless auth is disabled)."""
        self.spawn("api", "api")
        self.wait_until(lambda: httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200, 60, "api")
        if self.env.get("EMOTIONQ_AUTH") != "disabled" and "authorization" not in self.http.headers:
            self.http.headers["Authorization"] = f"Bearer {self.create_key('tests')}"

    def start_worker(self, *, wait: bool = True) -> None:
        self.spawn("worker", "worker")
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 120) -> dict:
        self.wait_until(lambda: httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200, timeout, "worker")
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
        self.http.close()
        for name in list(self.procs):
            try:
                self.stop(name)
            except AssertionError:
                pass

    def inference_worker_pids(self) -> tuple[int, int]:
        """(Celery main process, its pool child that holds the model) of this service's inference worker."""
        for pid in _children(self.procs["worker"].pid):
            if f"--queues {INFERENCE_QUEUE}" in _cmdline(pid):
                [child] = _children(pid)
                return pid, child
        raise AssertionError("no inference worker is running")

    @property
    def worker_name(self) -> str:
        """The Celery node name of this service's (CPU) inference worker."""
        return f"emotionq-cpu@{os.uname().nodename}"

    def inspect(self, what: str, *args: str):
        """`celery inspect WHAT` of this service's inference worker: its answer, parsed."""
        out = self.celery("inspect", what, *args, "--json", "--timeout", "10", "-d", self.worker_name)
        assert out.returncode == 0, out.stdout + out.stderr
        return json.loads(out.stdout)[self.worker_name]

    def control(self, *args: str) -> str:
        """`celery control ARGS` addressed to this service's inference worker: its output."""
        out = self.celery("control", *args, "--timeout", "10", "-d", self.worker_name)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    def tasks_received(self) -> int:
        """How many inference tasks the worker has received (Celery's count; batch extras are not tasks)."""
        return self.inspect("stats").get("total", {}).get(INFER_TASK, 0)

    def celery(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "celery", "-A", "emotionq", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_until(self, ready, timeout: float, name: str) -> None:
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
            return self.http.post("/v1/jobs", files={"file": (path.name, f)},
                                  data={k: str(v) for k, v in fields.items()}, headers=headers or {})

    def job(self, job_id: str, *, wait: float = 0) -> dict:
        headers = {"Prefer": f"wait={wait:g}"} if wait else {}
        r = self.http.get(f"/v1/jobs/{job_id}", headers=headers, timeout=wait + 30)
        r.raise_for_status()
        return r.json()

    def finish(self, job_id: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id, wait=min(30, max(1, deadline - time.monotonic())))
            if job["status"] in ("succeeded", "failed", "canceled") or time.monotonic() > deadline:
                return job
