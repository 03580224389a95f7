"""The FastAPI app: routers, auth, and one error shape. Thin: every route calls one service."""

from fastapi import FastAPI
from sqlalchemy import text

from api import errors
from api.routers import admin, audience, campaigns, events, tracking
from campaigns.db import get_engine


def create_app() -> FastAPI:
    app = FastAPI(
        title="MAB Campaigns",
        version="0.1.0",
        description="Multi-armed bandit experimentation for email marketing.",
    )
    errors.install(app)
    for module in (admin, audience, campaigns, events, tracking):
        app.include_router(module.router)

    @app.get("/health", tags=["ops"])
    def health() -> dict:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"status": "ok"}

    return app


app = create_app()
