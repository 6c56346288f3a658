"""The Dockerfile, linted by hadolint, and the compose file, validated by docker-compose (no Docker
daemon runs here: the images are not built)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import ROOT

DEPLOY = ROOT / "deploy"


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} is not installed: run scripts/system-deps and make install"
    return found


def test_the_dockerfile_lints_clean():
    out = subprocess.run([_tool("hadolint"), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    for i, line in enumerate(lines):  # every warning it silences is explained just above
        if line.startswith("# hadolint ignore="):
            rule = line.partition("=")[2].strip()
            assert any(rule in above and "ignore=" not in above for above in lines[max(0, i - 3):i]), (i + 1, rule)


def test_the_dockerfile_builds_what_the_deployment_needs():
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = [line.split()[-1] for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert {"cpu", "cuda", "runtime", "build-cpu", "build-cuda"} <= set(stages)
    assert "USER 10001" in dockerfile and "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert "torch==2.13.0" in dockerfile  # the same pin as setup.cfg
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*" and "!emotionq/" in ignored  # only what the image needs goes in the context


@pytest.fixture(scope="module")
def env_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("compose") / "compose.env"
    path.write_text((DEPLOY / "env.example").read_text())
    return path


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_the_compose_file_is_valid(env_file, profile):
    out = subprocess.run([_tool("docker-compose"), "-f", str(DEPLOY / "compose.yaml"), "--env-file", str(env_file),
                          "--profile", profile, "config"], capture_output=True, text=True, cwd=DEPLOY)
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    assert {"rabbitmq", "redis", "seaweedfs", "api", "webhooks", "janitor", "flower", "prometheus"} <= set(services)
    worker = services["worker" if profile == "cpu" else "worker-gpu"]
    assert worker["command"] == ["worker", "--role", "inference"]
    if profile == "gpu":
        [device] = worker["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia"
    assert "--appendfsync" in services["redis"]["command"] and "always" in services["redis"]["command"]
    assert services["flower"]["environment"]["EMOTIONQ_FLOWER_AUTH"] != "disabled"
    assert "management" in services["rabbitmq"]["image"]


def test_compose_refuses_to_start_without_its_secrets(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    out = subprocess.run([_tool("docker-compose"), "-f", str(DEPLOY / "compose.yaml"), "--env-file", str(empty),
                          "config"], capture_output=True, text=True, cwd=DEPLOY, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode != 0 and "RABBITMQ_PASSWORD" in out.stderr, out.stderr
