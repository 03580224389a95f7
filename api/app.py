"""The FastAPI app: routers, auth, and one error shape. Thin: every route calls one service."""

from fastapi import FastAPI

from api import errors
from api.middleware import RequestObserver
from api.routers import admin, audience, campaigns, events, ops, tracking, versions, webhooks
from campaigns.logging_config import configure_logging


def create_app() -> FastAPI:
    configure_logging()
    app = FastAPI(
        title="MAB Campaigns",
        version="0.1.0",
        description="Multi-armed bandit experimentation for email marketing.",
    )
    errors.install(app)
    for module in (admin, audience, campaigns, events, tracking, webhooks, versions):
        app.include_router(module.router)
    app.include_router(ops.router)  # /health, /ready, /metrics
    app.add_middleware(RequestObserver)

    return app


app = create_app()
