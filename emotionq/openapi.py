"""The OpenAPI document (/openapi.json, /docs): the responses each route declares, and two corrections
to what FastAPI generates from them.

- Errors are documented as application/problem+json, which is what the API sends; FastAPI files a
  response model under the route's own media type (application/json).
- Examples keep their nulls: FastAPI drops every None from the document, examples included
  (fastapi/fastapi#5559), which would leave a job example without its required null fields.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel

from emotionq import schemas

PROBLEM_JSON = "application/problem+json"
STATUS_MEANINGS = {
    401: "no API key, or one that is unknown or revoked",
    404: "no such job, or another client's",
    408: "the upload stalled: send it again",
    409: "the request clashes with the job or with an earlier request",
    413: "the upload is over the byte limit",
    422: "bad input: fix the request, do not retry it",
    429: "the queue for this priority is full: retry after Retry-After seconds",
    503: "a dependency is down: retry after Retry-After seconds",
}
RETRY_AFTER = {"description": "seconds to wait before retrying", "schema": {"type": "integer", "example": 5}}
LOCATION = {"description": "the job's URL",
            "schema": {"type": "string", "example": f"/v1/jobs/{schemas.JOB_QUEUED['id']}"}}
UPLOAD_BODY = {"required": True, "content": {"multipart/form-data": {
    "schema": schemas.JobForm.model_json_schema(),
    "encoding": {"file": {"contentType": "audio/*, video/*, application/octet-stream"}},
}}}


def job_examples(**jobs: dict) -> dict:
    """A success response's named examples of jobs."""
    return {"content": {"application/json": {"examples": {name: {"value": job} for name, job in jobs.items()}}}}


def problem_responses(*names: str) -> dict[int, dict]:
    """The ``responses`` entries for these problems (names of schemas.PROBLEM_EXAMPLES), grouped by status."""
    responses: dict[int, dict] = {}
    for name in names:
        example = schemas.PROBLEM_EXAMPLES[name]
        status = example["status"]
        response = responses.setdefault(status, {
            "model": schemas.Problem, "description": STATUS_MEANINGS[status],
            "content": {PROBLEM_JSON: {"examples": {}}},
            **({"headers": {"Retry-After": RETRY_AFTER}} if status in (429, 503) else {}),
        })
        response["content"][PROBLEM_JSON]["examples"][name] = {"summary": example["detail"], "value": example}
    return responses


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the corrected document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _correct(generate(), app)
        return app.openapi_schema

    app.openapi = openapi


def _correct(document: dict, app: FastAPI) -> None:
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        model = getattr(schemas, name, None)
        if isinstance(model, type) and issubclass(model, BaseModel) and "examples" in schema:
            schema["examples"] = copy.deepcopy(model.model_config["json_schema_extra"]["examples"])
    for route in app.routes:
        if not (isinstance(route, APIRoute) and route.include_in_schema):
            continue
        for method in route.methods:
            for status, response in document["paths"][route.path_format][method.lower()]["responses"].items():
                content = response.get("content", {})
                if status[0] in "45" and "application/json" in content:
                    content[PROBLEM_JSON] = {**content.pop("application/json"), **content.get(PROBLEM_JSON, {})}
                declared = route.responses.get(int(status), {}).get("content", {})
                for media_type, declared_content in declared.items():
                    if "examples" in declared_content:
                        content[media_type]["examples"] = copy.deepcopy(declared_content["examples"])
