"""The FastAPI app: routers, auth, and one error shape. Thin: every route calls one service."""

from fastapi import FastAPI

from api import errors, idempotency
from api.deps import Audited, NoNul
from api.limits import BodySizeLimit, RateLimit, document_limits
from api.middleware import RequestObserver
from api.request_id import RequestId
from api.routers import admin, audience, audit, campaigns, events, ops, privacy, tracking, versions, webhooks
from campaigns.logging_config import configure_logging


def create_app() -> FastAPI:
    configure_logging()
    app = FastAPI(
        title="MAB Campaigns",
        version="0.1.0",
        description="Multi-armed bandit experimentation for email marketing.",
        # the audit log of every call made with an API key; no NUL in a path or query (api/deps.py)
        dependencies=[Audited, NoNul],
    )
    errors.install(app)
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
