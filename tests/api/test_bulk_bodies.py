"""The bulk JSON routes (POST /customers, /orders, /events) parse and validate their body in a worker
thread, not on the event loop that serves every other request; a bad body is the same 422."""

import threading

import pytest

from api import bodies
from tests.factories import customers


@pytest.fixture
def parsed_in(monkeypatch):
    """Which thread each bulk body was validated in, and the event loop's thread."""
    seen = {"validated": [], "loop": []}
    real = bodies.run_in_threadpool

    async def spy(fn, *args):
        seen["loop"].append(threading.get_ident())

        def validate():
            seen["validated"].append((fn.__qualname__, threading.get_ident()))
            return fn(*args)

        return await real(validate)

    monkeypatch.setattr(bodies, "run_in_threadpool", spy)
    return seen


def test_customers_and_events_are_validated_off_the_event_loop(api, parsed_in):
    assert api("POST", "/customers", "marketer", json={"customers": customers(3)}).status_code == 200
    order = {"order_id": "o1", "customer_external_id": "c0", "ordered_at": "2026-01-01T10:00:00Z", "amount": 12.5}
    assert api("POST", "/orders", "marketer", json={"orders": [order]}).status_code == 200
    r = api("POST", "/events", "ingest", json={"events": [{"event_id": "e1", "type": "click", "send_id": 1}]})
    assert r.status_code == 202, r.text
    names = [name for name, _ in parsed_in["validated"]]
    assert names == ["BaseModel.model_validate_json"] * 3
    assert all(thread != loop for (_, thread), loop in zip(parsed_in["validated"], parsed_in["loop"], strict=True))


def test_a_bad_bulk_body_is_the_same_422_naming_the_field(api):
    bad = {"customers": [{"external_id": "x", "email": "not an address", "segment": "s"}]}
    r = api("POST", "/customers", "marketer", json=bad)
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "invalid_input" and body["detail"][0]["loc"] == "customers[0].email"
    r = api("POST", "/events", "ingest", content=b'{"events": [', headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "body"
    assert api("POST", "/events", "ingest", json={"events": []}).json()["detail"][0]["loc"] == "events"
