"""API keys and roles, for every route of the app, through real HTTP requests (SQLite and PostgreSQL)."""

import hashlib
import re

from fastapi.routing import APIRoute
from sqlalchemy import func, select

from campaigns.db import session_scope
from campaigns.models import ApiKey, utcnow
from campaigns.services import keys

try:  # FastAPI >= 0.16x keeps included routers lazily (`_IncludedRouter`); this walks into them.
    from fastapi.routing import iter_route_contexts
except ImportError:  # older FastAPI: app.routes is already flat
    iter_route_contexts = None

ROLES = ("admin", "marketer", "analyst", "ingest")
M, A, I = "marketer", "analyst", "ingest"  # noqa: E741
READER = (M, A)

# The expected access of every route, written out by hand (admin is allowed everywhere on top of these).
# A route added to the app without a line here fails test_every_route_is_in_the_table.
EXPECTED: dict[tuple[str, str], tuple[str, ...]] = {
    ("POST", "/api-keys"): (),
    ("GET", "/api-keys"): (),
    ("POST", "/api-keys/{key_id}/revoke"): (),
    ("GET", "/audit"): (),
    ("GET", "/customers/{external_id}/export"): (),
    ("POST", "/customers/{external_id}/erase"): (),
    ("GET", "/segments"): READER,
    ("POST", "/segments"): (M,),
    ("POST", "/segments/derive"): (M,),
    ("POST", "/customers"): (M,),
    ("POST", "/customers/csv"): (M,),
    ("GET", "/customers/{external_id}"): (M,),
    ("POST", "/orders"): (M,),
    ("POST", "/campaigns"): (M,),
    ("GET", "/campaigns"): READER,
    ("GET", "/campaigns/{campaign_id}"): READER,
    ("PATCH", "/campaigns/{campaign_id}"): (M,),
    ("GET", "/campaigns/{campaign_id}/variants"): READER,
    ("POST", "/campaigns/{campaign_id}/periods"): (M,),
    ("GET", "/campaigns/{campaign_id}/periods"): READER,
    ("GET", "/campaigns/{campaign_id}/periods/{number}"): READER,
    ("GET", "/campaigns/{campaign_id}/periods/{number}/sends.csv"): (M,),
    ("GET", "/campaigns/{campaign_id}/periods/{number}/sends.parquet"): (M,),
    ("GET", "/campaigns/{campaign_id}/allocations"): READER,
    ("GET", "/campaigns/{campaign_id}/report"): (M, A),
    ("GET", "/campaigns/{campaign_id}/report.csv"): (M, A),
    ("GET", "/campaigns/{campaign_id}/report.html"): (M, A),
    ("GET", "/campaigns/{campaign_id}/audience"): (M, A),
    ("GET", "/campaigns/{campaign_id}/check"): (M, A),
    ("POST", "/campaigns/{campaign_id}/preview"): (M, A),
    ("GET", "/campaigns/{campaign_id}/preview.html"): (M, A),
    ("POST", "/campaigns/{campaign_id}/{action}"): (M,),
    ("POST", "/campaigns/{campaign_id}/segments/{segment}/promote"): (M,),
    ("POST", "/campaigns/{campaign_id}/segments/{segment}/rollback"): (M,),
    ("POST", "/campaigns/{campaign_id}/segments/{segment}/resume"): (M,),
    ("GET", "/campaigns/{campaign_id}/versions"): READER,
    ("POST", "/events"): (I,),
    ("POST", "/events/conversions.csv"): (I,),
}

# No API key: /t and /u are proven by their signed token, the webhook by its HMAC signature
# (tests/api/test_webhook.py: an API key does not replace it). /ready and /metrics are for probes and
# scrapers (/metrics takes an admin key when MAB_METRICS_REQUIRE_KEY is set: tests/api/test_ops.py).
PUBLIC = {"/health", "/ready", "/metrics", "/t/{token}", "/u/{token}", "/webhooks/conversions",
          # the ESP's signature (or Postmark's basic auth) instead of a key (tests/api/test_esp_webhooks.py)
          "/webhooks/esp/mailgun", "/webhooks/esp/sendgrid", "/webhooks/esp/ses", "/webhooks/esp/postmark"}
# Any other path parameter gets 1. key_id: a key that does not exist (the admin's own key is #1).
DUMMY = {"action": "start", "external_id": "x", "key_id": "999999"}


def app_routes(app) -> set[tuple[str, str]]:
    """(method, path) of every APIRoute of the app, the included routers' ones too."""
    if iter_route_contexts is not None:
        items = [(c.original_route, c.path, c.methods) for c in iter_route_contexts(app.routes)]
    else:
        items = [(r, r.path, r.methods) for r in app.routes]
    out = set()
    for route, path, methods in items:
        if not isinstance(route, APIRoute) or path in PUBLIC:
            continue
        out.update((m, path) for m in methods if m != "HEAD")
    return out


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: DUMMY.get(m.group(1), "1"), path)


def test_every_route_is_in_the_table(api):
    routes = app_routes(api.client.app)
    assert len(routes) >= 20  # the walk found the routers' routes, not just /health
    assert routes == set(EXPECTED)


def test_no_key_or_a_wrong_key_is_401_everywhere(api):
    wrong = []
    for method, path in sorted(app_routes(api.client.app)):
        url = concrete(path)
        r = api(method, url, None)
        if r.status_code != 401 or r.json() != {
            "error": "unauthorized", "detail": "missing API key (send it in the X-API-Key header)"}:
            wrong.append((method, url, "no key", r.status_code, r.text))
        for bad in ("mab_not-a-real-key", api.keys["admin"] + "x", api.keys["admin"][:-1]):
            r = api(method, url, None, headers={"X-API-Key": bad})
            if r.status_code != 401 or r.json() != {"error": "unauthorized", "detail": "invalid or revoked API key"}:
                wrong.append((method, url, bad, r.status_code, r.text))
    assert wrong == []


def test_role_matrix(api):
    routes = app_routes(api.client.app)
    assert routes  # never vacuous
    wrong = []
    for method, path in sorted(routes):
        allowed = {"admin", *EXPECTED[(method, path)]}
        url = concrete(path)
        for role in ROLES:
            r = api(method, url, role)
            if role in allowed:
                if r.status_code in (401, 403):
                    wrong.append((method, url, role, "should be allowed", r.status_code, r.text))
            else:
                body = r.json()
                if r.status_code != 403 or body["error"] != "forbidden" or f"role '{role}'" not in body["detail"]:
                    wrong.append((method, url, role, "should be 403", r.status_code, r.text))
    assert wrong == []
    # The message also lists who may.
    r = api("GET", "/campaigns/1/report", "ingest")
    assert r.status_code == 403
    assert r.json() == {"error": "forbidden",
                        "detail": "role 'ingest' may not do this (allowed: admin, analyst, marketer)"}


def revoked_keys() -> dict[str, str]:
    """One revoked key per role (revoked in SQL here; the API's revocation is tested below)."""
    out = {}
    with session_scope() as s:
        for role in ROLES:
            row, plaintext = keys.create_key(s, f"revoked {role}", role)
            row.revoked_at = utcnow()
            out[role] = plaintext
    return out


def test_revoked_keys_of_every_role_are_401_everywhere(api):
    revoked = revoked_keys()
    routes = app_routes(api.client.app)
    wrong = []
    for method, path in sorted(routes):
        url = concrete(path)
        for role, key in revoked.items():
            r = api(method, url, None, headers={"X-API-Key": key})
            if r.status_code != 401 or r.json() != {"error": "unauthorized", "detail": "invalid or revoked API key"}:
                wrong.append((method, url, role, r.status_code, r.text))
    assert wrong == []
    assert len(routes) * len(ROLES) >= 4 * 30


def test_revoked_key_is_401(api):
    assert api("GET", "/campaigns", "marketer").status_code == 200
    with session_scope() as s:
        row = s.execute(select(ApiKey).where(ApiKey.role == "marketer")).scalars().one()
        row.revoked_at = utcnow()
    r = api("GET", "/campaigns", "marketer")
    assert r.status_code == 401 and r.json()["detail"] == "invalid or revoked API key"
    assert api("GET", "/campaigns", "analyst").status_code == 200  # other keys unaffected


def key_row(name: str) -> ApiKey:
    with session_scope() as s:
        return s.execute(select(ApiKey).where(ApiKey.name == name)).scalars().one()


def test_admin_revokes_a_key_through_the_api_for_rotation(api):
    # rotation: create the new key, switch over, revoke the old one
    r = api("POST", "/api-keys", "admin", json={"name": "ingest v2", "role": "ingest"})
    new_key, new_id = r.json()["key"], r.json()["id"]
    old_id = key_row("test ingest").id
    r = api("POST", f"/api-keys/{old_id}/revoke", "admin")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"id", "name", "role", "prefix", "created_at", "revoked_at"}
    assert (body["id"], body["name"], body["role"]) == (old_id, "test ingest", "ingest")
    assert body["revoked_at"] is not None and api.keys["ingest"].startswith(body["prefix"])
    r = api("POST", "/events", "ingest", json={"events": []})
    assert r.status_code == 401 and r.json()["detail"] == "invalid or revoked API key"
    assert api("POST", "/events", None, headers={"X-API-Key": new_key}, json={"events": []}).status_code == 422
    # twice: nothing changes, the first revocation time stays
    again = api("POST", f"/api-keys/{old_id}/revoke", "admin").json()
    assert again["revoked_at"] == body["revoked_at"]
    assert api("POST", "/api-keys/999999/revoke", "admin").status_code == 404
    for role in ("marketer", "analyst"):
        r = api("POST", f"/api-keys/{new_id}/revoke", role)
        assert r.status_code == 403 and f"role '{role}'" in r.json()["detail"]
    assert key_row("ingest v2").revoked_at is None

    # the list shows every key and its state, never a hash
    r = api("GET", "/api-keys", "admin")
    assert r.status_code == 200
    listed = {k["id"]: k for k in r.json()}
    assert listed[old_id]["revoked_at"] == body["revoked_at"] and listed[new_id]["revoked_at"] is None
    assert "key_hash" not in r.text and key_row("test admin").key_hash not in r.text
    page = api("GET", "/api-keys", "admin", params={"limit": 2})
    assert len(page.json()) == 2
    rest = api("GET", "/api-keys", "admin", params={"cursor": page.headers["X-Next-Cursor"]}).json()
    assert [k["id"] for k in page.json() + rest] == sorted(listed)

    # recorded: who revoked which key
    audit = api("GET", "/audit", "admin", params={"action": "POST /api-keys/{key_id}/revoke"}).json()
    assert [(e["object_type"], e["object_id"], e["key_role"], e["outcome"]) for e in audit] == [
        ("api_key", new_id, "analyst", "refused"), ("api_key", new_id, "marketer", "refused"),
        ("api_key", old_id, "admin", "success"), ("api_key", old_id, "admin", "success")]


def test_the_last_active_admin_key_cannot_be_revoked(api):
    admin_id = key_row("test admin").id
    r = api("POST", f"/api-keys/{admin_id}/revoke", "admin")
    assert r.status_code == 409 and "last active admin key" in r.json()["detail"]
    assert api("GET", "/audit", "admin").status_code == 200  # still works
    r = api("POST", "/api-keys", "admin", json={"name": "admin v2", "role": "admin"})
    second = r.json()["key"]
    assert api("POST", f"/api-keys/{admin_id}/revoke", "admin").status_code == 200  # now it may go
    assert api("GET", "/audit", "admin").status_code == 401
    assert api("GET", "/audit", None, headers={"X-API-Key": second}).status_code == 200


def test_mab_revoke_key_command(api):
    from typer.testing import CliRunner

    from campaigns.cli import app as cli

    analyst_id = key_row("test analyst").id
    result = CliRunner().invoke(cli, ["revoke-key", str(analyst_id)])
    assert result.exit_code == 0, result.output
    assert f"analyst key #{analyst_id} (test analyst) revoked" in result.output
    assert api("GET", "/campaigns", "analyst").status_code == 401
    result = CliRunner().invoke(cli, ["revoke-key", "999999"])
    assert result.exit_code == 1 and "no API key with id 999999" in result.output
    entry = api("GET", "/audit", "admin", params={"object_type": "api_key", "object_id": analyst_id}).json()
    assert [(e["action"], e["key_id"], e["outcome"]) for e in entry] == [("CLI mab revoke-key", None, "success")]


def key_count() -> int:
    with session_scope() as s:
        return s.execute(select(func.count()).select_from(ApiKey)).scalar_one()


def test_admin_creates_a_key_that_works_and_only_its_hash_is_stored(api):
    r = api("POST", "/api-keys", "admin", json={"name": "ci ingest", "role": "ingest"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"id", "name", "role", "key"}
    assert body["name"] == "ci ingest" and body["role"] == "ingest"
    plaintext = body["key"]
    assert plaintext.startswith("mab_") and len(plaintext) >= 40

    # The new key authenticates with exactly its role.
    r = api("POST", "/events", None, headers={"X-API-Key": plaintext}, json={"events": []})
    assert r.status_code == 422  # past auth: the body is what is wrong
    r = api("GET", "/campaigns", None, headers={"X-API-Key": plaintext})
    assert r.status_code == 403 and "role 'ingest'" in r.json()["detail"]

    with session_scope() as s:
        row = s.get(ApiKey, body["id"])
        assert row.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
        assert row.role == "ingest" and row.name == "ci ingest" and row.revoked_at is None
        stored = [str(getattr(row, c)) for c in ApiKey.__table__.columns.keys()]
        # the plaintext appears nowhere (the prefix column holds only its first characters)
        assert all(plaintext not in value for value in stored), stored
        assert len(row.prefix) < len(plaintext) // 2 and plaintext.startswith(row.prefix)


def test_only_admin_creates_keys_and_bad_input_writes_nothing(api):
    before = key_count()
    for role in ("marketer", "analyst", "ingest"):
        r = api("POST", "/api-keys", role, json={"name": "sneaky", "role": "admin"})
        assert r.status_code == 403 and f"role '{role}'" in r.json()["detail"]
    # Admin input is validated too.
    r = api("POST", "/api-keys", "admin", json={"name": "x", "role": "superuser"})
    assert r.status_code == 422 and [d["loc"] for d in r.json()["detail"]] == ["role"]
    r = api("POST", "/api-keys", "admin", json={"name": "", "role": "analyst"})
    assert r.status_code == 422 and [d["loc"] for d in r.json()["detail"]] == ["name"]
    assert key_count() == before
