"""Foreground process supervision for ``emotionq run`` and ``emotionq worker``.

Children run in their own sessions so that Ctrl-C reaches only us; we then ask
each to stop (SIGTERM: Celery's warm shutdown, uvicorn's graceful one), wait,
and kill what is left. If any child dies on its own, everything stops.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from emotionq.queues import INFERENCE_QUEUE, WEBHOOK_QUEUE
from emotionq.settings import Settings

log = logging.getLogger(__name__)
STOP_TIMEOUT_S = 30.0


def worker_command(settings: Settings, device: str) -> tuple[list[str], dict[str, str]]:
    """The Celery worker for one device: prefork, one process, pinned to that device."""
    slug = device.replace(":", "")
    name = f"emotionq-{slug}@{settings.worker_host or '%h'}"
    env = {"EMOTIONQ_WORKER_DEVICE": device, "EMOTIONQ_WORKER_NAME": name.replace("%h", os.uname().nodename)}
    if device.startswith("cuda"):
        index = device.partition(":")[2] or "0"
        env.update(CUDA_VISIBLE_DEVICES=index, EMOTIONQ_WORKER_DEVICE="cuda:0")
    return _celery_worker(pool="prefork", concurrency=1, queue=INFERENCE_QUEUE, name=name), env


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


def supervise(commands: list[tuple[str, list[str], dict[str, str]]]) -> int:
    """Run the named commands until Ctrl-C/SIGTERM or until one exits; returns an exit code."""
    procs: list[tuple[str, subprocess.Popen]] = []
    stopping = False

    def request_stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        for name, cmd, env in commands:
            procs.append((name, subprocess.Popen(cmd, env={**os.environ, **env}, start_new_session=True)))
            log.info("started %s (pid %d)", name, procs[-1][1].pid)
        while not stopping:
            for name, proc in procs:
                if proc.poll() is not None:
                    log.error("%s exited with %s; stopping the rest", name, proc.returncode)
                    code, stopping = proc.returncode or 1, True
            time.sleep(0.2)
    finally:
        _stop_all(procs)
        for s, handler in old.items():
            signal.signal(s, handler)
    return code


def _stop_all(procs: list[tuple[str, subprocess.Popen]]) -> None:
    for _, proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for name, proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0f s; killing it", name, STOP_TIMEOUT_S)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
