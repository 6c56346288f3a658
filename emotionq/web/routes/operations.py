"""What operators and load balancers call: liveness, readiness, Prometheus metrics; and ``/``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from emotionq import __version__, jobs, metrics, queues
from emotionq.errors import NoWorkers
from emotionq.jobs.models import served_models
from emotionq.jobs.scheduler.readiness import live
from emotionq.web.deps import ClientDep, ServicesDep
from emotionq.web.openapi import problem_responses
from emotionq.web.schemas import MODELS_EXAMPLE, ServedModels

router = APIRouter()


@router.get("/", include_in_schema=False)
async def home():
    """The upload page (relative, so it works behind a path prefix)."""
    return RedirectResponse("ui/")


@router.get("/healthz")
async def healthz():
    """Liveness: the API process answers."""
    return {"status": "ok", "version": __version__}


MinWorkers = Annotated[int, Query(ge=0, le=10_000, description="how many workers with a model must answer: "
                                  "0 for a load balancer's probe where workers scale to zero")]


@router.get("/readyz", responses=problem_responses("no_workers", "store_unavailable", "broker_unavailable"))
async def readyz(svc: ServicesDep, workers: MinWorkers = 1):
    """Readiness: store and broker answer, and (by default) at least one worker has a model that answered."""
    await run_in_threadpool(svc.store.ping)
    await run_in_threadpool(queues.ping, svc.celery)
    ready = await run_in_threadpool(live, svc.store)
    if len(ready) < workers:
        raise NoWorkers(f"{len(ready)} workers have a model loaded, fewer than {workers}; start `emotionq worker`"
                        if ready else "no worker has a model loaded yet; start `emotionq worker`")
    return {"status": "ready", "mode": "embedded" if svc.settings.embedded else "distributed", "workers": ready}


@router.get("/v1/models", response_model=ServedModels,
            responses={200: {"content": {"application/json": {"examples": {"served": {"value": MODELS_EXAMPLE}}}}},
                       **problem_responses("unauthorized", "rate_limited", "store_unavailable")})
async def models(svc: ServicesDep, client: ClientDep):
    """The models the live workers serve now, from their readiness: one entry per family and loaded model."""
    return {"models": await run_in_threadpool(served_models, svc.store)}


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(svc: ServicesDep):
    """Prometheus text format, without an API key (scrapers have none): keep it off the public internet."""
    state = metrics.StoreState(lambda: jobs.queue_depth(svc.store), workers=lambda: live(svc.store),
                               limits={p: svc.settings.max_queued(p) for p in ("high", "low")})
    return Response(await run_in_threadpool(metrics.api_exposition, state), media_type=metrics.CONTENT_TYPE)
