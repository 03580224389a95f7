"""The FastAPI app: routers, auth, and one error shape. Thin: every route calls one service."""

import gc
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import bodies, docs_ui, errors, idempotency, openapi_rules
from api.deps import Audited, NoNul
from api.limits import BodySizeLimit, RateLimit, document_limits
from api.middleware import RequestObserver
from api.request_id import RequestId
from api.routers import admin, audience, audit, campaigns, events, ops, privacy, tracking, versions, webhooks
from campaigns.logging_config import configure_logging

_frozen = False


@asynccontextmanager
async def freeze_startup_objects(app: FastAPI):
    """Python's full garbage collection walks every object the process holds: about 110 ms with the
    app's ~185,000 (modules, models, routes), a pause that every request in flight waits for; it set
    the click redirect's p99 under load. What exists at startup lives as long as the process, so it
    is moved out of the collector's walks (`gc.freeze`); objects made later are collected as usual.
    Once per process: the tests start many apps in one."""
    global _frozen
    if not _frozen:
        gc.collect()
        gc.freeze()
        _frozen = True
    yield


def create_app() -> FastAPI:
    configure_logging()
    app = FastAPI(
        lifespan=freeze_startup_objects,
        title="MAB Campaigns",
        version="0.1.0",
        description="Multi-armed bandit experimentation for email marketing.",
        # the audit log of every call made with an API key; no NUL in a path or query (api/deps.py)
        dependencies=[Audited, NoNul],
        docs_url=None,  # /docs and /redoc: served offline by api/docs_ui.py
        redoc_url=None,
    )
    docs_ui.install(app)
    errors.install(app)
    bodies.install(app)  # the bulk bodies' models, before the rules below amend them
    openapi_rules.install(app)  # what the API enforces, in its OpenAPI document
    idempotency.install(app)  # replays of an Idempotency-Key
    for module in (admin, audience, campaigns, events, tracking, webhooks, versions, audit, privacy):
        app.include_router(module.router)
    app.include_router(ops.router)  # /health, /ready, /metrics
    tracking.add_click_route(app)  # outside the app-wide dependencies: see its docstring
    document_limits(app)  # the 413 and 429 of the middlewares below, in the OpenAPI document
    app.add_middleware(BodySizeLimit)  # innermost of the three: the rate limit answers first
    app.add_middleware(RateLimit)
    app.add_middleware(RequestObserver)  # it also counts the 429s and 413s
    app.add_middleware(RequestId)  # outermost: every response and log line carries the request's id

    return app


app = create_app()
