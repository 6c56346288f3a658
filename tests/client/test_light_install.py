"""The client installed alone: a wheel built from this tree, in a fresh virtual environment that holds only
the client's declared dependencies, scores a folder against the running service with its `emotionq submit`.

No package index is needed. The environment gets its dependencies from this test run's own environment: the
closure of the wheel's Requires-Dist (httpx, tqdm, click and what they require), read from the installed
packages' metadata, is linked into one folder that a .pth file puts on the new environment's path; pip then
installs the wheel with --no-index, so it must find every declared dependency there. Anything the client
imports without declaring it (pydantic, numpy, ...) is simply not there, and the command fails.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from audio_factory import distinct_clips
from emotionq import LABELS
from emotionq.client import Client
from harness import ROOT

pytestmark = [pytest.mark.timeout(300), pytest.mark.rabbitmq, pytest.mark.redis]

SERVER_ONLY = ("torch", "funasr", "celery", "fastapi", "onnxruntime", "redis", "pydantic", "pydantic_settings",
               "numpy", "uvicorn", "kombu")
SOURCES = ("pyproject.toml", "setup.cfg", "README.md", "celeryconfig.py", "emotionq")


def build_wheel(out: Path) -> Path:
    """The emotionq wheel, built from a copy of this tree (the build's scratch files stay out of it)."""
    src = out / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(out / "dist"), str(src)], check=True, capture_output=True, timeout=240)
    [wheel] = (out / "dist").glob("emotionq-*.whl")
    return wheel


def requirements(wheel: Path) -> list[Requirement]:
    """The wheel's Requires-Dist that apply without extras, on this Python."""
    with zipfile.ZipFile(wheel) as z:
        [name] = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = z.read(name).decode()
    found = [Requirement(v) for v in re.findall(r"^Requires-Dist: (.+)$", metadata, flags=re.M)]
    return [r for r in found if r.marker is None or r.marker.evaluate({**default_environment(), "extra": ""})]


def closure(roots: list[Requirement]) -> dict[str, importlib.metadata.Distribution]:
    """Those distributions and everything they require (without extras), as installed here."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in found:
            continue
        dist = importlib.metadata.distribution(req.name)
        assert req.specifier.contains(dist.version, prereleases=True), f"{req} but {dist.version} is installed"
        found[name] = dist
        env = {**default_environment(), "extra": ""}
        todo += [r for r in map(Requirement, dist.requires or []) if r.marker is None or r.marker.evaluate(env)]
    return found


def link_into(folder: Path, dists: dict[str, importlib.metadata.Distribution]) -> None:
    """Each distribution's top-level packages, modules and .dist-info, symlinked from ``folder``."""
    folder.mkdir()
    for dist in dists.values():
        site = Path(dist.locate_file(""))
        tops = {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops - {"__pycache__"}:
            if not (folder / top).exists():
                (folder / top).symlink_to(site / top)


@pytest.fixture(scope="module")
def light_env(tmp_path_factory) -> Path:
    """A virtual environment with the emotionq wheel and only what it declares it needs; its bin folder."""
    tmp = tmp_path_factory.mktemp("light")
    wheel = build_wheel(tmp)
    needed = closure(requirements(wheel))
    assert {"httpx", "tqdm", "click"} <= set(needed)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    link_into(tmp / "deps", needed)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (site / "client-deps.pth").write_text(f"{tmp / 'deps'}\n")
    out = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                          "--no-index", "--no-cache-dir", str(wheel)], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr  # a declared dependency that is not in the closure
    return venv / "bin"


def run(bin_dir: Path, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """A program of the light environment, with nothing of this tree or this environment on its path."""
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    clean["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=cwd, env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=240)


def test_the_client_installs_without_the_servers_dependencies(light_env, tmp_path):
    probe = "import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is not None for m in %r}))"
    out = run(light_env, "python", "-c", probe % ((*SERVER_ONLY, "emotionq.client", "httpx", "tqdm"),), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert [m for m in SERVER_ONLY if found[m]] == []
    assert found["emotionq.client"] and found["httpx"] and found["tqdm"]

    where = run(light_env, "python", "-c", "import emotionq; print(emotionq.__file__)", cwd=tmp_path)
    assert str(light_env.parent) in where.stdout, where.stdout + where.stderr  # the wheel's copy, not this tree

    server = run(light_env, "emotionq", "run", cwd=tmp_path)
    assert server.returncode == 1 and "pip install 'emotionq[server]'" in server.stderr, server.stderr
    listed = run(light_env, "emotionq", "--help", cwd=tmp_path)
    assert listed.returncode == 0 and "submit" in listed.stdout and "server only" in listed.stdout, listed.stderr


def test_the_light_submit_scores_a_folder_to_csv_and_segments(light_env, service, folder, tmp_path):
    env = {"EMOTIONQ_API_URL": service.url, "EMOTIONQ_API_KEY": service.key}
    results, segments = tmp_path / "results.csv", tmp_path / "segments.jsonl"
    out = run(light_env, "emotionq", "submit", str(folder), "--format", "csv", "-o", str(results), "--segments",
              str(segments), "-j", "3", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    with open(results, newline="") as f:
        records = {Path(r["file"]).name: r for r in csv.DictReader(f)}
    assert sorted(records) == ["clip-000.wav", "clip-001.wav", "clip-002.wav"]
    rows = [json.loads(line) for line in segments.read_text().splitlines()]
    for name, record in records.items():
        assert record["status"] == "succeeded" and record["error_code"] == "", record
        job = Client(service.url, service.key).job(record["job_id"])
        assert {label: float(record[label]) for label in LABELS} == pytest.approx(job["output"]["scores"])
        mine = [r for r in rows if Path(r["file"]).name == name]
        assert [(r["start"], r["end"], r["label"], r["scores"]) for r in mine] == [
            (s["start"], s["end"], s["label"], s["scores"]) for s in job["output"]["segments"]]
    assert rows, "no segment rows: the recordings have speech"


def test_the_light_async_client_waits_on_events(light_env, service, speech_wav, tmp_path):
    script = (
        "import asyncio, json, sys\n"
        "from emotionq.client import AsyncClient\n"
        "async def main():\n"
        "    async with AsyncClient(sys.argv[1], sys.argv[2]) as api:\n"
        "        job = await api.submit(sys.argv[3])\n"
        "        seen = [e.event async for e in api.events(job['id']) if e.event != 'ping']\n"
        "        print(json.dumps({'job': await api.wait(job['id'], timeout=120), 'seen': seen}))\n"
        "asyncio.run(main())\n")
    [clip] = distinct_clips(speech_wav, tmp_path, 1)
    out = run(light_env, "python", "-c", script, service.url, service.key, str(clip), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["job"]["status"] == "succeeded"
    assert answer["job"] == Client(service.url, service.key).job(answer["job"]["id"])
    assert answer["seen"][0] == "queued" and answer["seen"][-1] == "succeeded"
