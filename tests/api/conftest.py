import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.factories import api_keys


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
