"""The HTTP API application: ``create_app`` wires routes, middleware and error handlers together.

Its lifespan opens this process's connections once.

Every error a request can end in becomes ``application/problem+json`` here, through the one table
of statuses in ``emotionq.web.problems``: emotionq's own errors, FastAPI's validation errors,
Starlette's 404/405, and (``web.middleware.UnexpectedErrors``) anything unexpected.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from emotionq import __version__, queues
from emotionq.blobs import open_blobs
from emotionq.errors import ClientGone, EmotionQError, InvalidRequest, MethodNotAllowed, NotFound
from emotionq.jobs.scheduler.ticker import Ticker
from emotionq.settings import get_settings
from emotionq.store import open_store
from emotionq.web import keys, openapi, problems
from emotionq.web.deps import Services
from emotionq.web.middleware import HTTPMetrics, UnexpectedErrors
from emotionq.web.routes import jobs, operations, webhooks
from emotionq.webhooks import delivery, events

log = logging.getLogger(__name__)
PAGE_DIR = Path(__file__).parent / "web" / "page"  # the upload page: static files, no build step


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings = get_settings()
    store = open_store(settings.effective_store_url)
    store.purge_expired()
    celery = queues.make_celery(settings)
    notifier = events.Notifier(store=store, celery=celery, settings=settings)
    app.state.services = Services(settings, store, open_blobs(settings), celery, notifier,
                                  delivery.Policy.from_settings(settings))
    if settings.auth == "disabled":
        log.warning("EMOTIONQ_AUTH=disabled: every caller is the client %r, with no API key; for local use only",
                    keys.ANONYMOUS)
    log.info("emotionq API %s in %s mode: broker %s, store %s", __version__,
             "embedded" if settings.embedded else "distributed", settings.effective_broker_url.split("@")[-1],
             settings.effective_store_url.split("@")[-1])
    ticker = Ticker(store, celery, settings).start()  # dispatches what no submit or claim did
    yield
    ticker.stop()
    if store.aio is not None:
        await store.aio.close()
    store.close()


async def _emotionq_error(request: Request, exc: EmotionQError):
    status = problems.status_of(exc)
    if isinstance(exc, ClientGone):
        log.info("%s %s: %s", request.method, request.url.path, exc.message)
    elif status >= 500:
        log.error("%s %s -> %d %s: %s", request.method, request.url.path, status, exc.code, exc.message)
    return problems.response(exc)


async def _validation_error(request: Request, exc: RequestValidationError):
    detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return problems.response(InvalidRequest(detail))


async def _starlette_error(request: Request, exc: StarletteHTTPException):
    """Starlette's own errors (no such route, a method the route lacks) as problems like all others."""
    if exc.status_code == 405:
        error: EmotionQError = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
    elif exc.status_code == 404:
        error = NotFound(f"no such resource: {request.url.path}; see /docs for the API's routes")
    else:
        error = EmotionQError(str(exc.detail), code="http_error")
    return problems.response(error, headers=exc.headers)


def create_app() -> FastAPI:
    app = FastAPI(title="emotionq", version=__version__, lifespan=lifespan,
                  description="Speech emotion recognition (emotion2vec) as a queued service.")
    openapi.install(app)
    app.add_exception_handler(EmotionQError, _emotionq_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _starlette_error)
    app.add_middleware(UnexpectedErrors)
    app.add_middleware(HTTPMetrics)  # outermost: it counts the 500s UnexpectedErrors answers
    app.mount("/ui", StaticFiles(directory=PAGE_DIR, html=True), name="ui")  # no API key: the page asks for one
    for router in (jobs.router, webhooks.router, operations.router):
        app.include_router(router)
    return app
