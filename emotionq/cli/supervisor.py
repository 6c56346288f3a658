"""Foreground process supervision for ``emotionq run`` and ``emotionq worker``, and draining.

Children run in their own sessions so that Ctrl-C (or the SIGTERM a process manager or
Kubernetes sends) reaches only us. Stopping is a drain: each child is asked to stop
gracefully (SIGTERM: Celery's warm shutdown finishes the job in hand and takes no new one;
uvicorn's graceful one finishes its requests), and we wait up to ``EMOTIONQ_DRAIN_TIMEOUT_S``.
A second Ctrl-C/SIGTERM, or the end of that wait, stops them now: Celery workers get SIGQUIT
(a cold shutdown: the job in hand goes back to the queue, redelivered and not lost), others
SIGINT, and whatever is still there a few seconds later is killed. If any child dies on its
own, everything stops the same way.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time

from emotionq.queues import WEBHOOK_QUEUE, worker_queues
from emotionq.settings import Settings

log = logging.getLogger(__name__)
HARD_STOP_S = 10.0  # after the hard-stop signal, before SIGKILL
POLL_S = 0.2


def devices(settings: Settings) -> list[str]:
    """The devices to start one inference worker for: ``EMOTIONQ_DEVICES``, where ``auto`` means every CUDA
    device nvidia-smi lists (CUDA itself is not initialised here), else the CPU."""
    if settings.devices != ["auto"]:
        return settings.devices
    return _cuda_devices() or ["cpu"]


def _cuda_devices() -> list[str]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [f"cuda:{line.strip()}" for line in out.splitlines() if line.strip()]


def worker_command(settings: Settings, device: str) -> tuple[list[str], dict[str, str]]:
    """The Celery worker for one device: prefork, one process, pinned to that device."""
    slug = device.replace(":", "")
    name = f"emotionq-{slug}@{settings.worker_host or '%h'}"
    env = {"EMOTIONQ_WORKER_DEVICE": device, "EMOTIONQ_WORKER_NAME": name.replace("%h", os.uname().nodename)}
    if device.startswith("cuda"):
        index = device.partition(":")[2] or "0"
        env.update(CUDA_VISIBLE_DEVICES=index, EMOTIONQ_WORKER_DEVICE="cuda:0")
    return _celery_worker(pool="prefork", concurrency=1, queue=",".join(worker_queues(settings)), name=name), env


def webhook_worker_command(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """The CPU worker that delivers webhooks: threads, since deliveries wait on the network."""
    name = f"emotionq-webhooks@{settings.worker_host or '%h'}"
    env = {"EMOTIONQ_WORKER_NAME": name.replace("%h", os.uname().nodename)}
    return _celery_worker(pool="threads", concurrency=settings.webhook_concurrency, queue=WEBHOOK_QUEUE,
                          name=name), env


def _celery_worker(*, pool: str, concurrency: int, queue: str, name: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "emotionq", "worker", "--pool", pool,
            "--concurrency", str(concurrency), "--queues", queue, "--hostname", name, "--loglevel", "INFO",
            "--without-gossip", "--without-mingle"]


def janitor_command() -> list[str]:
    """The janitor (``emotionq.janitor``): one active across hosts, whoever starts more."""
    return [sys.executable, "-m", "emotionq.cli", "janitor"]


def api_command() -> list[str]:
    """The API: uvicorn with emotionq's logging, slow-client guard and connection cap (``emotionq.web.server``)."""
    return [sys.executable, "-m", "emotionq.web.server"]


def supervise(commands: list[tuple[str, list[str], dict[str, str]]], *, drain_timeout_s: float) -> int:
    """Run the named commands until Ctrl-C/SIGTERM or until one exits, then drain them; returns an exit code."""
    procs: list[tuple[str, list[str], subprocess.Popen]] = []
    signals = 0

    def on_signal(signum, frame) -> None:
        nonlocal signals
        signals += 1
        if signals == 2:
            log.warning("stopping now: the jobs in hand go back to the queue")

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        for name, cmd, env in commands:
            procs.append((name, cmd, subprocess.Popen(cmd, env={**os.environ, **env}, start_new_session=True)))
            log.info("started %s (pid %d)", name, procs[-1][2].pid)
        while not signals and not code:
            for name, _, proc in procs:
                if proc.poll() is not None and not code:
                    log.error("%s exited with %s; stopping the rest", name, proc.returncode)
                    code = proc.returncode or 1
            time.sleep(POLL_S)
        _drain(procs, timeout_s=drain_timeout_s, hurry=lambda: signals > 1)
    finally:
        _kill_left(procs)
        for s, handler in old.items():
            signal.signal(s, handler)
    return code


def _drain(procs: list[tuple[str, list[str], subprocess.Popen]], *, timeout_s: float, hurry) -> None:
    """Ask each child to stop gracefully; stop them hard on ``hurry()`` or after ``timeout_s``."""
    for _, _, proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    if any(proc.poll() is None for _, _, proc in procs):
        log.info("draining: workers finish the jobs in hand and take no new ones, for at most %.0f s "
                 "(Ctrl-C or SIGTERM again stops them now; their jobs go back to the queue)", timeout_s)
    deadline = time.monotonic() + timeout_s
    while any(proc.poll() is None for _, _, proc in procs):
        if hurry() or time.monotonic() > deadline:
            for name, cmd, proc in procs:
                if proc.poll() is None:
                    log.warning("%s: stopping it now", name)
                    proc.send_signal(_hard_stop_signal(cmd))
            _wait_all(procs, HARD_STOP_S)
            return
        time.sleep(POLL_S)


def _hard_stop_signal(cmd: list[str]) -> int:
    """Celery's cold shutdown (the job in hand is requeued); uvicorn's forced exit."""
    return signal.SIGQUIT if "celery" in cmd else signal.SIGINT


def _wait_all(procs: list[tuple[str, list[str], subprocess.Popen]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while any(proc.poll() is None for _, _, proc in procs) and time.monotonic() < deadline:
        time.sleep(POLL_S)


def _kill_left(procs: list[tuple[str, list[str], subprocess.Popen]]) -> None:
    for name, _, proc in procs:
        if proc.poll() is None:
            log.warning("%s did not stop; killing it", name)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
