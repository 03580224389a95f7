"""Mass assignment (OWASP API3/API6): request bodies accept only the fields a client may set. Ids,
status, counters and timestamps are never writable; status changes only through lifecycle actions."""

import pydantic
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import func, select

from campaigns.db import session_scope
from campaigns.models import ApiKey, Campaign, Customer, Event
from campaigns.schemas import CampaignCreate, CampaignPublic, CampaignUpdate
from tests.api.test_auth import app_routes
from tests.factories import small_campaign_payload

try:
    from fastapi.routing import iter_route_contexts
except ImportError:
    iter_route_contexts = None

# Every field of the stored campaign and of its public shape: the candidates a client might try to set.
CAMPAIGN_FIELDS = set(Campaign.__table__.columns.keys()) | set(CampaignPublic.model_fields)
PATCH_FORBIDDEN = sorted(CAMPAIGN_FIELDS - set(CampaignUpdate.model_fields))
POST_FORBIDDEN = sorted(CAMPAIGN_FIELDS - set(CampaignCreate.model_fields))
SERVER_OWNED = {"id", "status", "created_at", "updated_at", "started_at", "next_period_at", "status_reason",
                "variant_count", "links"}


def sample(field: str):
    """A value of a plausible type, so the refusal is about the field, never about its value."""
    if field in ("id", "variant_count", "burn_in_min_sends", "attribution_window_days"):
        return 7
    if field.endswith("_at"):
        return "2030-01-01T00:00:00Z"
    if field in ("holdout_share", "exploration_floor"):
        return 0.2
    if field in ("factors", "baseline"):
        return {"tone": ["friendly"]}
    if field in ("exclusions", "links", "segments"):
        return []
    return "active" if field == "status" else "x"


def campaign_count() -> int:
    with session_scope() as s:
        return s.execute(select(func.count()).select_from(Campaign)).scalar_one()


def refused(r, loc: str) -> bool:
    if r.status_code != 422:
        return False
    detail = r.json()["detail"]
    return [d["loc"] for d in detail] == [loc] and "Extra inputs are not permitted" in detail[0]["msg"]


def test_the_lists_cover_the_server_owned_fields():
    assert SERVER_OWNED <= set(PATCH_FORBIDDEN) and SERVER_OWNED <= set(POST_FORBIDDEN)
    assert {"factors", "objective", "exclusions", "baseline", "segments", "model"} <= set(PATCH_FORBIDDEN)


def test_patch_refuses_every_non_editable_field_by_name(api):
    r = api("POST", "/campaigns", "marketer", json=small_campaign_payload())
    cid = r.json()["id"]
    before = api("GET", f"/campaigns/{cid}", "marketer").json()
    wrong = []
    for field in PATCH_FORBIDDEN:
        # alone, and next to an editable field (which must not be applied either)
        for body in ({field: sample(field)}, {"name": "changed", field: sample(field)}):
            r = api("PATCH", f"/campaigns/{cid}", "marketer", json=body)
            if not refused(r, field):
                wrong.append((body, r.status_code, r.text))
    assert wrong == []
    assert api("GET", f"/campaigns/{cid}", "marketer").json() == before
    # the editable fields do change
    r = api("PATCH", f"/campaigns/{cid}", "marketer", json={"name": "renamed", "holdout_share": 0.2})
    assert r.status_code == 200 and (r.json()["name"], r.json()["holdout_share"]) == ("renamed", 0.2)


def test_post_refuses_every_server_owned_field_by_name(api):
    wrong = []
    for field in POST_FORBIDDEN:
        r = api("POST", "/campaigns", "marketer", json=small_campaign_payload(**{field: sample(field)}))
        if not refused(r, field):
            wrong.append((field, r.status_code, r.text))
    assert wrong == []
    assert campaign_count() == 0


def test_status_changes_only_through_lifecycle_actions(api):
    cid = api("POST", "/campaigns", "marketer", json=small_campaign_payload()).json()["id"]
    for status in ("active", "completed", "paused"):
        assert refused(api("PATCH", f"/campaigns/{cid}", "admin", json={"status": status}), "status")
    assert api("GET", f"/campaigns/{cid}", "marketer").json()["status"] == "draft"
    r = api("POST", f"/campaigns/{cid}/start", "marketer")
    assert r.status_code == 200 and r.json()["status"] == "active"
    r = api("PATCH", f"/campaigns/{cid}", "marketer", json={"name": "late edit"})
    assert r.status_code == 409  # and nothing is editable once it runs
    r = api("POST", f"/campaigns/{cid}/draft", "marketer")
    assert r.status_code == 422  # not a lifecycle action: no way back to draft
    assert api("GET", f"/campaigns/{cid}", "marketer").json()["status"] == "active"


@pytest.mark.parametrize(("role", "path", "body", "loc"), [
    # an import cannot reset an unsubscribe, nor pick ids or timestamps
    ("marketer", "/customers", {"customers": [{"external_id": "a", "email": "a@example.com", "status": "active"}]},
     "customers[0].status"),
    ("marketer", "/customers", {"customers": [{"external_id": "a", "email": "a@example.com", "id": 1}]},
     "customers[0].id"),
    ("marketer", "/customers", {"customers": [{"external_id": "a", "email": "a@example.com",
                                               "created_at": "2020-01-01T00:00:00Z"}]}, "customers[0].created_at"),
    ("marketer", "/orders", {"orders": [{"order_id": "o", "customer_external_id": "a", "amount": 1,
                                         "ordered_at": "2030-01-01T00:00:00Z", "customer_id": 1}]},
     "orders[0].customer_id"),
    # an ingest key cannot mark an event applied (a bot's click as a reward) or name its reason
    ("ingest", "/events", {"events": [{"event_id": "e", "type": "click", "send_id": 1, "status": "applied"}]},
     "events[0].status"),
    ("ingest", "/events", {"events": [{"event_id": "e", "type": "click", "send_id": 1, "received_at": "2030-01-01"}]},
     "events[0].received_at"),
    # a key's hash, prefix and revocation are the server's
    ("admin", "/api-keys", {"name": "k", "role": "ingest", "key_hash": "0" * 64}, "key_hash"),
    ("admin", "/api-keys", {"name": "k", "role": "ingest", "revoked_at": None}, "revoked_at"),
    ("admin", "/api-keys", {"name": "k", "role": "ingest", "id": 1}, "id"),
    ("marketer", "/segments", {"name": "s1", "id": 1}, "id"),
    # who took a model action is the key that called, never a field
    ("marketer", "/campaigns/1/segments/all/promote", {"arm": 0, "reason": "r", "key_name": "someone else"},
     "key_name"),
    ("marketer", "/campaigns/1/segments/all/resume", {"reason": "r", "created_at": "2030-01-01"}, "created_at"),
])
def test_other_bodies_refuse_server_owned_fields(api, role, path, body, loc):
    before = row_counts()
    r = api("POST", path, role, json=body)
    assert refused(r, loc), r.text
    assert row_counts() == before


def row_counts() -> list[int]:
    with session_scope() as s:
        return [s.execute(select(func.count()).select_from(m)).scalar_one() for m in (Customer, Event, ApiKey)]


def _models(annotation) -> list[type[pydantic.BaseModel]]:
    """Every pydantic model inside a type annotation (list[X], X | None, Annotated[...])."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        out = [annotation]
        for f in annotation.model_fields.values():
            out += _models(f.annotation)
        return out
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models(arg)]


def test_every_request_body_of_the_app_forbids_unknown_fields(api):
    """A guard for routes yet to come: every JSON body model, nested ones too, is `extra="forbid"`."""
    if iter_route_contexts is not None:
        routes = [c.original_route for c in iter_route_contexts(api.client.app.routes)]
    else:
        routes = list(api.client.app.routes)
    bodies = {}
    for route in routes:
        if isinstance(route, APIRoute) and route.body_field is not None:
            for model in _models(route.body_field.field_info.annotation):
                bodies[model.__name__] = model.model_config.get("extra")
    assert len(bodies) >= 10, bodies  # the walk found the bodies (campaigns, customers, events, keys …)
    assert {name: extra for name, extra in bodies.items() if extra != "forbid"} == {}
    assert len(app_routes(api.client.app)) > 30
