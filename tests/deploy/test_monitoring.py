"""Alerting rules and the dashboard: `promtool check rules` and `promtool test rules` (a firing and a
quiet case per alert), and every metric the rules and the dashboard use, found in the real /metrics
of a running API and worker."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from audio_factory import distinct_clips
from harness import ROOT, free_port, running

PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "emotionq.json"
CUDA_ONLY = {"emotionq_gpu_memory_allocated_bytes", "emotionq_gpu_memory_max_allocated_bytes"}


def _promtool(*args: str) -> subprocess.CompletedProcess:
    tool = shutil.which("promtool")
    assert tool, "promtool is not installed: run scripts/system-deps (Debian's prometheus package)"
    return subprocess.run([tool, *args], capture_output=True, text=True, cwd=PROMETHEUS)


def test_rules_are_valid():
    out = _promtool("check", "rules", "rules.yaml")
    assert out.returncode == 0 and "SUCCESS: 6 rules found" in out.stdout, out.stdout + out.stderr


def test_each_alert_fires_on_its_case_and_stays_quiet_on_the_other():
    tests = yaml.safe_load((PROMETHEUS / "rules_test.yaml").read_text())["tests"]
    alerts = {rule["alert"] for group in yaml.safe_load((PROMETHEUS / "rules.yaml").read_text())["groups"]
              for rule in group["rules"]}
    checked = [(case["alertname"], bool(case["exp_alerts"])) for test in tests for case in test["alert_rule_test"]]
    assert {a for a, fires in checked if fires} == alerts and {a for a, fires in checked if not fires} == alerts
    out = _promtool("test", "rules", "rules_test.yaml")
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def _metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b(emotionq_[a-z0-9_]+)", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def _used() -> dict[str, set[str]]:
    rules = yaml.safe_load((PROMETHEUS / "rules.yaml").read_text())
    exprs = {"rules": [r["expr"] for g in rules["groups"] for r in g["rules"]],
             "dashboard": [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]}
    return {where: set().union(*(_metric_names(e) for e in found)) for where, found in exprs.items()}


def _scraped(url: str) -> set[str]:
    text = httpx.get(url, timeout=10).text
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_model_dir, redis_url, receiver):
    with running(tmp_path_factory.mktemp("monitoring"), model=tiny_model_dir, store=redis_url,
                 worker_metrics_port=free_port(), webhook_allow_networks="127.0.0.0/8") as svc:
        yield svc


def test_every_metric_the_rules_and_dashboard_use_is_exported(service, receiver, speech_wav, tmp_path):
    [clip] = distinct_clips(speech_wav, tmp_path, 1)
    job = service.finish(service.submit(clip, webhook_url=receiver.url("monitoring")).json()["id"])
    assert job["status"] == "succeeded"
    receiver.wait("monitoring", 1)
    worker_url = f"http://127.0.0.1:{service.env['EMOTIONQ_WORKER_METRICS_PORT']}/metrics"
    deadline = time.monotonic() + 30
    while True:  # the webhook worker counts its attempt just after the receiver has it
        exported = _scraped(f"{service.url}/metrics") | _scraped(worker_url)
        names = {re.sub(r"_(bucket|sum|count|total|created)$", "", n) for n in exported} | exported
        missing = {where: sorted(used - names - CUDA_ONLY) for where, used in _used().items()}
        if not any(missing.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not any(missing.values()), missing
    from emotionq import metrics  # the GPU gauges are defined, though a CPU worker exports none

    assert {m._name for m in (metrics.GPU_ALLOCATED, metrics.GPU_MAX_ALLOCATED)} == CUDA_ONLY
