"""The OpenAPI document of the running API: every /v1 operation shows examples of what it takes and
answers, and schemathesis, generating requests from it, gets no 5xx from the API."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from emotionq.web.schemas import Job, Problem, ServedModels, WebhookSecrets
from harness import running

pytestmark = [pytest.mark.timeout(300), pytest.mark.rabbitmq, pytest.mark.redis]

MODELS = {"Job": Job, "Problem": Problem, "WebhookSecrets": WebhookSecrets, "ServedModels": ServedModels}


@pytest.fixture(scope="module")
def service(tmp_path_factory, redis_url):
    """The API on RabbitMQ and Redis. No worker: what schemathesis gets accepted stays queued in a vhost
    of its own, deleted afterwards."""
    tmp = tmp_path_factory.mktemp("openapi")
    # Jobs by URL from no host at all: schemathesis makes up audio_url values, and nothing may be fetched.
    with running(tmp, model=tmp / "unused", store=redis_url, worker=False, audio_url_hosts="audio.invalid") as svc:
        yield svc


@pytest.fixture(scope="module")
def document(service) -> dict:
    r = httpx.get(f"{service.url}/openapi.json")
    r.raise_for_status()
    return r.json()


def _operations(document: dict):
    for path, operations in document["paths"].items():
        if path.startswith("/v1/"):
            for method, operation in operations.items():
                yield f"{method.upper()} {path}", operation


def _schema(document: dict, schema: dict) -> tuple[str | None, dict]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return name, document["components"]["schemas"][name]
    return None, schema


def test_every_v1_operation_has_examples_of_its_answers(document):
    operations = dict(_operations(document))
    assert len(operations) == 8, sorted(operations)
    for label, operation in operations.items():
        statuses = sorted(operation["responses"])
        assert any(s.startswith("2") for s in statuses) and any(s.startswith("4") for s in statuses), label
        assert "401" in statuses, f"{label}: every /v1 route needs an API key"
        for status, response in operation["responses"].items():
            [(media_type, content)] = response["content"].items()
            name, schema = _schema(document, content["schema"])
            if media_type == "text/event-stream":  # the job's events: a sample stream
                assert label.endswith("/events") and "event: queued" in content["example"], label
                continue
            if status.startswith("2"):
                assert media_type == "application/json", (label, status)
            else:
                assert (media_type, name) == ("application/problem+json", "Problem"), (label, status, media_type)
                if status in ("429", "503"):
                    assert "Retry-After" in response["headers"], (label, status)
            examples = [e["value"] for e in content.get("examples", {}).values()] or schema.get("examples", [])
            assert examples, f"{label} {status}: no example"
            for example in examples:  # each example is a valid instance of what the API answers
                MODELS[name].model_validate(example)
                if name == "Problem":
                    assert str(example["status"]) == status and example["type"].endswith(example["code"])


def test_every_v1_operation_has_examples_of_what_it_takes(document):
    for label, operation in _operations(document):
        for parameter in operation.get("parameters", []):
            assert parameter["schema"].get("examples"), f"{label}: parameter {parameter['name']} has no example"
    upload = document["paths"]["/v1/jobs"]["post"]["requestBody"]
    assert upload["required"] is True
    form = upload["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["file"] == {**form["properties"]["file"], "type": "string", "format": "binary"}
    assert form["required"] == ["file"]
    assert set(form["properties"]) == {"file", "priority", "granularity", "embedding", "metadata", "webhook_url",
                                       "webhook_events", "segmentation", "vad_threshold", "min_speech_ms",
                                       "min_silence_ms", "speech_pad_ms", "channels", "channel_names", "speakers",
                                       "max_speakers", "transcript", "language", "itn"}
    for name, field in form["properties"].items():
        assert field.get("description"), name
        assert name == "file" or field.get("examples"), name


def test_schemathesis_finds_no_server_error(service, tmp_path):
    """Schemathesis's examples, coverage, fuzzing and stateful phases, a bounded number of cases per
    operation; /readyz is left out because without a worker it answers 503 by design."""
    key = service.create_key("schemathesis")
    out = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{service.url}/openapi.json",
         "--header", f"Authorization: Bearer {key}", "--checks", "not_a_server_error",
         "--max-examples", "30", "--workers", "1", "--request-timeout", "30", "--exclude-path", "/readyz"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "passed" in out.stdout and "failed" not in out.stdout.lower(), out.stdout[-6000:]
    log = service.log("api")  # the API logs every 5xx it sends (api._emotionq_error, api._unexpected_error)
    assert "Traceback" not in log and " -> 5" not in log, log[-3000:]
