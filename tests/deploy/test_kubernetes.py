"""The Kubernetes manifests: rendered by `kubectl kustomize` (base and GPU overlay), validated offline
against the Kubernetes schemas (kubernetes-validate, strict), and KEDA's objects against the fields
KEDA documents (keda.sh/docs, ScaledObject and the rabbitmq and prometheus scalers). No cluster runs
here: nothing is applied."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from harness import ROOT, settings

OVERLAYS = {"base": ROOT / "deploy" / "k8s" / "base", "gpu": ROOT / "deploy" / "k8s" / "overlays" / "gpu"}

_OBJECT = {"type": "object", "additionalProperties": False}
_METADATA = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
# ScaledObject (keda.sh/v1alpha1) as KEDA documents it; rabbitmq and prometheus trigger metadata.
SCALED_OBJECT = {**_OBJECT, "required": ["apiVersion", "kind", "metadata", "spec"], "properties": {
    "apiVersion": {"const": "keda.sh/v1alpha1"}, "kind": {"const": "ScaledObject"}, "metadata": _METADATA,
    "spec": {**_OBJECT, "required": ["scaleTargetRef", "triggers"], "properties": {
        "scaleTargetRef": {**_OBJECT, "required": ["name"], "properties": {
            "name": {"type": "string"}, "kind": {"type": "string"}, "apiVersion": {"type": "string"},
            "envSourceContainerName": {"type": "string"}}},
        **{k: {"type": "integer", "minimum": 0} for k in (
            "pollingInterval", "cooldownPeriod", "initialCooldownPeriod", "idleReplicaCount", "minReplicaCount",
            "maxReplicaCount")},
        "fallback": {**_OBJECT, "properties": {"failureThreshold": {"type": "integer"}, "replicas": {"type": "integer"}}},
        "advanced": {**_OBJECT, "properties": {
            "restoreToOriginalReplicaCount": {"type": "boolean"},
            "horizontalPodAutoscalerConfig": {**_OBJECT, "properties": {
                "name": {"type": "string"}, "behavior": {"type": "object"}}},
            "scalingModifiers": {"type": "object"}}},
        "triggers": {"type": "array", "minItems": 1, "items": {**_OBJECT, "required": ["type", "metadata"], "properties": {
            "type": {"enum": ["rabbitmq", "prometheus"]}, "name": {"type": "string"},
            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]}, "useCachedMetrics": {"type": "boolean"},
            "authenticationRef": {**_OBJECT, "required": ["name"], "properties": {
                "name": {"type": "string"}, "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]}}},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}}}}}}}}}
RABBITMQ_METADATA = {**_OBJECT, "required": ["queueName", "mode", "value"], "properties": {
    **{k: {"type": "string"} for k in ("host", "hostFromEnv", "queueName", "vhostName", "value", "activationValue",
                                      "useRegex", "excludeUnacknowledged", "operation", "pageSize", "timeout",
                                      "unsafeSsl")},
    "protocol": {"enum": ["auto", "amqp", "http"]}, "mode": {"enum": ["QueueLength", "MessageRate"]}}}
PROMETHEUS_METADATA = {**_OBJECT, "required": ["serverAddress", "query", "threshold"], "properties": {
    k: {"type": "string"} for k in ("serverAddress", "query", "threshold", "activationThreshold", "namespace",
                                   "customHeaders", "ignoreNullValues", "queryParameters", "unsafeSsl")}}
TRIGGER_AUTHENTICATION = {**_OBJECT, "required": ["apiVersion", "kind", "metadata", "spec"], "properties": {
    "apiVersion": {"const": "keda.sh/v1alpha1"}, "kind": {"const": "TriggerAuthentication"}, "metadata": _METADATA,
    "spec": {**_OBJECT, "properties": {"secretTargetRef": {"type": "array", "items": {
        **_OBJECT, "required": ["parameter", "name", "key"], "properties": {
            "parameter": {"type": "string"}, "name": {"type": "string"}, "key": {"type": "string"}}}}}}}}


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on the PATH (Debian does not package it): install a client to render kustomize")
    return kubectl


@pytest.fixture(scope="module", params=sorted(OVERLAYS))
def rendered(request, tmp_path_factory) -> tuple[str, Path, list[dict]]:
    out = subprocess.run([_kubectl(), "kustomize", str(OVERLAYS[request.param])], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    path = tmp_path_factory.mktemp("k8s") / f"{request.param}.yaml"
    path.write_text(out.stdout)
    return request.param, path, [d for d in yaml.safe_load_all(out.stdout) if d]


def _by_kind(docs, kind: str, name: str) -> dict:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def test_the_manifests_are_valid_kubernetes(rendered, tmp_path):
    _, _, docs = rendered
    core = tmp_path / "core.yaml"
    core.write_text(yaml.safe_dump_all([d for d in docs if not d["apiVersion"].startswith("keda.sh/")]))
    tool = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent)) or "kubernetes-validate"
    out = subprocess.run([tool, "--strict", str(core)], capture_output=True, text=True)
    assert out.returncode == 0 and "FAIL" not in out.stdout + out.stderr, out.stdout + out.stderr
    assert out.stdout.count("passed") == len(docs) - 2  # every core object, checked


def test_keda_objects_have_only_documented_fields(rendered):
    _, _, docs = rendered
    scaled = _by_kind(docs, "ScaledObject", "emotionq-worker")
    jsonschema.validate(scaled, SCALED_OBJECT)
    triggers = {t["type"]: t for t in scaled["spec"]["triggers"]}
    jsonschema.validate(triggers["rabbitmq"]["metadata"], RABBITMQ_METADATA)
    jsonschema.validate(triggers["prometheus"]["metadata"], PROMETHEUS_METADATA)
    # the management API (http) counts unacknowledged messages, so pods at work are not scaled away
    assert triggers["rabbitmq"]["metadata"]["protocol"] == "http"
    assert triggers["rabbitmq"]["metadata"]["queueName"] == "emotion"
    auth = _by_kind(docs, "TriggerAuthentication", triggers["rabbitmq"]["authenticationRef"]["name"])
    jsonschema.validate(auth, TRIGGER_AUTHENTICATION)
    [ref] = auth["spec"]["secretTargetRef"]
    secret = _by_kind(docs, "Secret", ref["name"])
    assert ref["key"] in secret["stringData"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "emotionq-worker"
    _by_kind(docs, "Deployment", "emotionq-worker")


def test_workers_drain_within_their_grace_period_and_the_api_is_probed(rendered):
    overlay, _, docs = rendered
    defaults = settings()
    worker = _by_kind(docs, "Deployment", "emotionq-worker")["spec"]["template"]["spec"]
    config = _by_kind(docs, "ConfigMap", "emotionq")["data"]
    hard_limit = float(config.get("EMOTIONQ_MAX_TIME_LIMIT", defaults.max_time_limit))
    drain = float(config["EMOTIONQ_DRAIN_TIMEOUT_S"])
    assert hard_limit < drain < worker["terminationGracePeriodSeconds"]
    [container] = worker["containers"]  # one worker process per pod
    assert container["args"] == ["worker", "--role", "inference"]
    if overlay == "gpu":
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert container["image"].endswith("-cuda")
    api = _by_kind(docs, "Deployment", "emotionq-api")["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"].startswith("/readyz")
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {d["kind"] for d in docs} >= {"PodDisruptionBudget", "Secret", "Service", "ConfigMap"}
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        names = {e["secretRef"]["name"] for c in deployment["spec"]["template"]["spec"]["containers"]
                 for e in c.get("envFrom", []) if "secretRef" in e}
        assert names == {"emotionq"}, deployment["metadata"]["name"]  # keys and URLs from the Secret only
