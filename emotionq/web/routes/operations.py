"""What operators and load balancers call: liveness, readiness, Prometheus metrics; and ``/``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from emotionq import __version__, jobs, metrics, queues
from emotionq.errors import NoWorkers
from emotionq.web.deps import ServicesDep
from emotionq.web.openapi import problem_responses
from emotionq.worker.readiness import live

router = APIRouter()


@router.get("/", include_in_schema=False)
async def home():
    """The upload page (relative, so it works behind a path prefix)."""
    return RedirectResponse("ui/")


@router.get("/healthz")
async def healthz():
    """Liveness: the API process answers."""
    return {"status": "ok", "version": __version__}


@router.get("/readyz", responses=problem_responses("no_workers", "store_unavailable", "broker_unavailable"))
async def readyz(svc: ServicesDep):
    """Readiness: store and broker answer, and at least one worker has a model that answered."""
    await run_in_threadpool(svc.store.ping)
    await run_in_threadpool(queues.ping, svc.celery)
    workers = await run_in_threadpool(live, svc.store)
    if not workers:
        raise NoWorkers("no worker has a model loaded yet; start `emotionq worker`")
    return {"status": "ready", "mode": "embedded" if svc.settings.embedded else "distributed", "workers": workers}


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(svc: ServicesDep):
    """Prometheus text format, without an API key (scrapers have none): keep it off the public internet."""
    depth = metrics.QueueDepth(lambda: jobs.queue_depth(svc.store),
                               limits={p: svc.settings.max_queued(p) for p in ("high", "low")})
    return Response(await run_in_threadpool(metrics.api_exposition, depth), media_type=metrics.CONTENT_TYPE)
