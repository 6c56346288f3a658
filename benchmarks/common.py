"""What the benchmarks share: paths, checkpoints, speech clips, the real service, timing, rows, the report."""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import redis
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from audio_factory import make_speech  # noqa: E402
from benchmarks.rows import Row, fmt, print_table  # noqa: E402,F401 - the rows live there, free of servers
from harness import Service, fresh_redis_db, rabbitmq_vhost  # noqa: E402

BENCH_DIR = ROOT / "var" / "bench"
ONNX_CACHE = BENCH_DIR / "onnx"  # the CPU runtime's graphs, exported once per checkpoint and software versions
REDIS_DB = 15  # the tests use 9 and 11-14
TWIN_REDIS_DB = 10  # a second service's, where a benchmark runs two at once
THREADS = 2  # torch threads of the worker and of every bare baseline: this machine's cores
MIXED_LENGTHS_S = (1, 15, 4, 8, 2, 12, 6, 10, 3, 14, 5, 9)  # mean 7.4 s: long for emotion corpora
# Utterance lengths as emotion corpora have them (IEMOCAP's average about 4.5 s), with a long tail.
UTTERANCE_LENGTHS_S = (2, 3, 1.5, 4, 2.5, 6, 3, 5, 2, 9, 3.5, 12)  # mean 4.5 s
SHORT_LENGTHS_S = (1, 2, 1.5, 3, 1, 2.5, 4, 2, 1.5, 3.5, 1, 2)  # mean 2.1 s: turns, commands, short replies


# -- rows and the report -----------------------------------------------------------------------------------


@dataclass
class Context:
    quick: bool
    details: dict = field(default_factory=dict)  # per benchmark: everything measured, for the JSON

    def workdir(self, name: str) -> Path:
        """An empty directory for one benchmark's clips and service logs (kept until the next run)."""
        path = BENCH_DIR / "work" / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def detail(self, name: str) -> dict:
        return self.details.setdefault(name, {})


def write_results(rows: list[Row], ctx: Context, *, started: float, errors: dict) -> Path:
    """``var/bench/results-<UTC>.json`` and a copy as ``var/bench/latest.json``."""
    stamp = datetime.fromtimestamp(started, timezone.utc)
    doc = {
        "started_at": stamp.isoformat().replace("+00:00", "Z"),
        "duration_s": round(time.time() - started, 1),
        "quick": ctx.quick,
        "machine": {**_machine(), "loadavg_1m_end": os.getloadavg()[0]},
        "rows": [asdict(r) for r in rows],
        "details": ctx.details,
        "errors": errors,
    }
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path = BENCH_DIR / f"results-{stamp:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    shutil.copyfile(path, BENCH_DIR / "latest.json")
    return path


def _machine() -> dict:
    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    git = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    return {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": version("torch"), "funasr": version("funasr"), "git": git.stdout.strip() or None}


# -- models, clips, timing ---------------------------------------------------------------------------------


def checkpoint(arch: str) -> Path:
    """The random-weight checkpoint ``arch`` under var/bench/models, written once (by `emotionq model init`)."""
    path = BENCH_DIR / "models" / arch
    if not (path / "model.pt").is_file():
        tmp = path.with_name(f"{arch}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "emotionq.cli", "model", "init", str(tmp), "--arch", arch],
                       cwd=ROOT, check=True, capture_output=True)
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    return path


def speech(seconds: float) -> Path:
    """``seconds`` of espeak-ng speech at 16 kHz (make_speech), cached under var/bench/clips."""
    path = BENCH_DIR / "clips" / f"speech-{seconds:g}s.wav"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        make_speech(path.with_name(f"partial-{path.name}"), seconds=seconds).rename(path)
    return path


@functools.lru_cache
def _samples(seconds: float) -> tuple[np.ndarray, int]:
    return sf.read(speech(seconds), dtype="int16")


def distinct_clips(directory: Path, lengths: list[float]) -> list[Path]:
    """One WAV per length whose bytes no earlier upload had (so dedup never joins them):
    the cached speech with its last 8 samples randomised; the length stays exact."""
    rng = np.random.default_rng()
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, seconds in enumerate(lengths):
        data, rate = _samples(seconds)
        data = data.copy()
        data[-8:] = rng.integers(-50, 50, size=8, dtype="int16")
        path = directory / f"clip-{k:03d}-{seconds:g}s.wav"
        sf.write(path, data, rate, subtype="PCM_16")
        paths.append(path)
    return paths


def mixed_lengths(n: int, lengths: tuple[float, ...] = MIXED_LENGTHS_S) -> list[float]:
    return [lengths[i % len(lengths)] for i in range(n)]


def ts(value: str) -> float:
    """An API timestamp (ISO 8601, Z) as Unix seconds."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linearly interpolated."""
    return float(np.percentile(np.asarray(values, dtype=float), q))


def run_child(*args) -> dict:
    """``python -m benchmarks.child ARGS`` in a fresh process (onnx graphs cached in ONNX_CACHE); its JSON answer."""
    args = ("--cache-dir", ONNX_CACHE, *args)
    out = subprocess.run([sys.executable, "-m", "benchmarks.child", *map(str, args)], cwd=ROOT,
                         capture_output=True, text=True, timeout=1200)
    if out.returncode != 0:
        raise RuntimeError(f"benchmarks.child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the real service --------------------------------------------------------------------------------------


def wait_http(url: str, timeout: float) -> None:
    """Until ``url`` answers 200 (RuntimeError after ``timeout`` seconds)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout:.0f} s")


@contextlib.contextmanager
def service(workdir: Path, model: Path, db: int = REDIS_DB, **env: str):
    """The API (started, keyed) in distributed mode on this machine's RabbitMQ (a private vhost, deleted
    afterwards) and Redis (database ``db``, emptied before and after); start workers with
    ``svc.start_worker()``. Batching is off unless ``EMOTIONQ_BATCH_SIZE`` is given."""
    with rabbitmq_vhost() as amqp:
        store = fresh_redis_db(db)
        svc = Service(workdir=workdir, env={
            "EMOTIONQ_BROKER_URL": amqp, "EMOTIONQ_STORE_URL": store, "EMOTIONQ_VAR_DIR": str(workdir / "var"),
            "EMOTIONQ_MODEL": str(model), "EMOTIONQ_TORCH_THREADS": str(THREADS), "EMOTIONQ_BATCH_SIZE": "1",
            "EMOTIONQ_RUNTIME_CACHE_DIR": str(ONNX_CACHE), **env})
        try:
            svc.start_api()
            yield svc
        finally:
            svc.stop_all()
            redis.Redis.from_url(store).flushdb()


def submit_all(svc: Service, paths: list[Path], *, threads: int = 1, segmentation: str = "fixed",
               **fields) -> list[str]:
    """Upload every path (in order when ``threads`` is 1); the job ids, in the order of ``paths``.
    ``segmentation`` is fixed unless asked: the bare loops the figures are compared with score whole clips
    in windows, so the service must score the same audio (speech segments would score less of it)."""
    def one(path: Path) -> str:
        r = svc.submit(path, segmentation=segmentation, **fields)
        if r.status_code not in (200, 202):
            raise RuntimeError(f"upload of {path.name} answered {r.status_code}: {r.text[:300]}")
        return r.json()["id"]

    if threads == 1:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, paths))


def finish_all(svc: Service, ids: list[str], *, timeout: float = 1200) -> list[dict]:
    """Wait for every job (long polls, in order); raise unless all succeeded."""
    deadline = time.monotonic() + timeout
    jobs = [svc.finish(i, timeout=max(1.0, deadline - time.monotonic())) for i in ids]
    bad = [j for j in jobs if j["status"] != "succeeded"]
    if bad:
        raise RuntimeError(f"{len(bad)} of {len(jobs)} jobs did not succeed, e.g. {bad[0]['status']}: "
                           f"{bad[0].get('error')}")
    return jobs
