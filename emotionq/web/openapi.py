"""The OpenAPI document (/openapi.json, /docs): the responses routes declare, and two corrections.

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

from emotionq.web import problems, schemas
from emotionq.web.form import json_schema, schema_with_file

PROBLEM_JSON = problems.MEDIA_TYPE
HEADERS = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer", "example": 5}},
    "RateLimit-Policy": {"description": "the client's limit (draft-ietf-httpapi-ratelimit-headers): q requests per "
                         "w seconds, or q jobs waiting", "schema": {"type": "string",
                                                                    "example": '"requests";q=100;w=2'}},
    "RateLimit": {"description": "what is left of it (r) and seconds until more (t)",
                  "schema": {"type": "string", "example": '"requests";r=0;t=1'}},
    "WWW-Authenticate": {"description": "how to authenticate", "schema": {"type": "string",
                                                                         "example": 'Bearer realm="emotionq"'}},
}
LOCATION = {"description": "the job's URL",
            "schema": {"type": "string", "example": f"/v1/jobs/{schemas.JOB_QUEUED['id']}"}}
UPLOAD_BODY = {"required": True, "content": {
    "multipart/form-data": {
        "schema": schema_with_file(),
        "encoding": {"file": {"contentType": "audio/*, video/*, application/octet-stream"}},
    },
    "application/json": {  # a job by URL: the same options, and the recording's audio_url
        "schema": json_schema(),
        "example": {"audio_url": "https://recordings.example.com/c-1842.wav", "priority": "high",
                    "metadata": {"call_id": "c-1842"}},
    },
}}


def job_examples(**jobs: dict) -> dict:
    """A success response's named examples of jobs."""
    return {"content": {"application/json": {"examples": {name: {"value": job} for name, job in jobs.items()}}}}


def problem_responses(*names: str) -> dict[int, dict]:
    """The ``responses`` entries for these problems (names of ``problems.EXAMPLES``), grouped by status:
    each status described by its problems' classes, each example the body the API would send."""
    by_status: dict[int, list[str]] = {}
    for name in names:
        by_status.setdefault(problems.status_of(problems.EXAMPLES[name]), []).append(name)
    responses: dict[int, dict] = {}
    for status, grouped in by_status.items():
        errors = [problems.EXAMPLES[name] for name in grouped]
        headers = {h: HEADERS[h] for e in errors for h in problems.headers_for(e)}
        responses[status] = {
            "model": schemas.Problem, "description": problems.meaning([type(e) for e in errors]),
            "content": {PROBLEM_JSON: {"examples": {
                name: {"summary": e.message, "value": problems.body(e)} for name, e in zip(grouped, errors)}}},
            **({"headers": headers} if headers else {}),
        }
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
    for route in _api_routes(app.routes):
        if not route.include_in_schema:
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


def _api_routes(routes):
    """The API routes, those of included routers too (FastAPI keeps those inside an included-router
    object that holds the router, whose routes carry their full paths: no prefix is added on include)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif getattr(route, "original_router", None) is not None:
            yield from _api_routes(route.original_router.routes)
