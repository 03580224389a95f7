import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from campaigns.services import clicks
from campaigns.settings import get_settings
from tests.factories import api_keys

QUEUE = "mab"  # Celery's default queue (worker/app.py), a Redis list


class Api:
    """A TestClient (real ASGI requests through the app) that sends a role's key."""

    def __init__(self, client: TestClient, keys: dict[str, str]):
        self.client = client
        self.keys = keys

    def __call__(self, method: str, path: str, role: str | None = "admin", **kw):
        headers = kw.pop("headers", {})
        if role is not None:
            headers["X-API-Key"] = self.keys[role]
        return self.client.request(method, path, headers=headers, **kw)


@pytest.fixture
def api(database_url, redis_server):
    with TestClient(create_app()) as client:
        yield Api(client, api_keys())


@pytest.fixture
def queue(redis_server):
    """The Celery queue in Redis (and the click stream), emptied before and after: what a route
    enqueued, and nothing else."""
    r = redis.Redis.from_url(redis_server.url)
    r.delete(QUEUE, clicks.STREAM, clicks.FOLD_SCHEDULED)
    yield r
    r.delete(QUEUE, clicks.STREAM, clicks.FOLD_SCHEDULED)
    r.close()


@pytest.fixture
def settings_env(monkeypatch):
    """Set MAB_* variables for one test; settings are re-read, and restored afterwards."""
    def set_(**env) -> None:
        for k, v in env.items():
            monkeypatch.setenv(k, str(v))
        get_settings.cache_clear()

    yield set_
    get_settings.cache_clear()
