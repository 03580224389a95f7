"""Excessive data exposure (OWASP API3): every GET route of a populated service, read with an admin key,
never shows an API key hash or a plaintext key other than at creation, a signing or webhook secret, and
a customer's route never shows another customer's data."""

import re

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import select

from campaigns import signing
from campaigns.db import session_scope
from campaigns.models import ApiKey
from tests.api.test_privacy import BYSTANDER, VICTIM, shop  # noqa: F401 (the populated service)

try:
    from fastapi.routing import iter_route_contexts
except ImportError:
    iter_route_contexts = None

SIGNING = "sign-7a1f0c3e9d-current"
SIGNING_OLD = "sign-2b8e4d6f1a-previous"
WEBHOOK = ("whsec-5c9a1e7b3d-new", "whsec-8d2f6a4c0e-old")


@pytest.fixture
def secrets_set(monkeypatch):
    """Runs before the database fixture, whose settings reload then sees these."""
    monkeypatch.setenv("MAB_SIGNING_SECRET", SIGNING)
    monkeypatch.setenv("MAB_SIGNING_PREVIOUS_SECRETS", SIGNING_OLD)
    monkeypatch.setenv("MAB_WEBHOOK_SECRETS", ",".join(WEBHOOK))


def get_routes(app) -> list[str]:
    routes = [c.original_route for c in iter_route_contexts(app.routes)] if iter_route_contexts else app.routes
    paths = {r.path for r in routes if isinstance(r, APIRoute) and "GET" in r.methods}
    return sorted(paths | {"/openapi.json", "/docs", "/redoc"})


def test_no_get_route_exposes_hashes_secrets_or_other_customers(secrets_set, api, shop):  # noqa: F811
    from campaigns.settings import get_settings

    assert get_settings().signing_secret == SIGNING  # the service really runs with these secrets
    # more of what a live service holds: a model action, a revoked key, a second admin
    r = api("POST", f"/campaigns/{shop['campaign']}/segments/champions/promote", "marketer",
            json={"arm": 0, "reason": "test"})
    assert r.status_code == 201, r.text
    created = api("POST", "/api-keys", "admin", json={"name": "second admin", "role": "admin"}).json()
    assert "key_hash" not in created and set(created) == {"id", "name", "role", "key"}  # the key, once
    revoked = api("POST", f"/api-keys/{created['id']}/revoke", "admin")
    assert revoked.status_code == 200 and "key_hash" not in revoked.text
    with session_scope() as s:
        hashes = list(s.execute(select(ApiKey.key_hash)).scalars())
    plaintexts = [*api.keys.values(), created["key"]]
    forbidden = {"key_hash", SIGNING, SIGNING_OLD, *WEBHOOK, *hashes, *plaintexts}

    victim, sends = VICTIM["external_id"], shop["sends"]
    values = {"campaign_id": str(shop["campaign"]), "number": "1", "external_id": victim,
              "token": None}  # per route below
    others = [BYSTANDER["email"], BYSTANDER["external_id"], "Ottoline", "by-order-1", "c1@example.com", "c2"]
    wrong, read = [], 0
    for path in get_routes(api.client.app):
        if path.startswith("/t/"):
            url = f"/t/{signing.sign('click', sends[0])}"
        elif path.startswith("/u/"):
            url = f"/u/{signing.sign('unsub', sends[0])}"
        elif path.endswith("/preview.html"):  # one customer's email, named in the query
            url = f"/campaigns/{shop['campaign']}/preview.html?customer={victim}&variant=0"
        else:
            names = re.findall(r"\{(\w+)\}", path)
            assert set(names) <= set(values), f"{path}: give its path parameters a value in this test"
            url = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)
        r = api("GET", url, "admin", follow_redirects=False)
        if r.status_code >= 400:
            wrong.append((url, r.status_code, r.text[:200]))
            continue
        read += 1
        seen = r.text + " " + " ".join(f"{k}: {v}" for k, v in r.headers.items())
        leaks = [f for f in forbidden if f in seen]
        if leaks:
            wrong.append((url, "leaks", leaks))
        if "{external_id}" in path:  # one customer's routes: that customer only
            assert VICTIM["email"] in r.text, url
            other = [o for o in others if re.search(rf"\b{re.escape(o)}\b", r.text)]
            if other:
                wrong.append((url, "other customer", other))
    assert wrong == []
    assert read >= 20  # every GET route answered (none is in `wrong`)

    # an unknown or revoked key is never echoed back
    for bad in ("mab_not-a-real-key-123", created["key"]):
        r = api("GET", "/campaigns", None, headers={"X-API-Key": bad})
        assert r.status_code == 401 and bad not in r.text and bad not in str(r.headers)
