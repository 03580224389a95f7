"""Campaign definition and lifecycle through real HTTP requests into the app (SQLite and PostgreSQL)."""

import pytest
from sqlalchemy import func, select

from campaigns.db import session_scope
from campaigns.models import Campaign, Variant
from tests.factories import campaign_payload, small_campaign_payload


def table_counts() -> tuple[int, int]:
    with session_scope() as s:
        return (s.execute(select(func.count()).select_from(Campaign)).scalar_one(),
                s.execute(select(func.count()).select_from(Variant)).scalar_one())


def test_demo_campaign_has_200_variants_and_per_segment_exclusions(api):
    payload = campaign_payload(exclusions=[
        {"when": {"tone": "playful", "discount": ["0%", "5%"]}},
        {"when": {"discount": ["40%", "50%"]}, "segments": ["champions"]},
    ])
    r = api("POST", "/campaigns", "marketer", json=payload)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["variant_count"] == 200 - 2 * 5  # playful × {0%, 5%} × 5 offers removed everywhere
    assert body["status"] == "draft"
    assert body["baseline"] == {"tone": "friendly", "offer": "free_dessert", "discount": "0%"}
    variants = api("GET", f"/campaigns/{body['id']}/variants", "marketer").json()
    assert len(variants) == 190
    assert [v["arm"] for v in variants] == list(range(190))
    assert all(not (v["params"]["tone"] == "playful" and v["params"]["discount"] in ("0%", "5%")) for v in variants)


BAD_INPUTS = [
    ({"factors": {}}, "factors", "at least one factor"),
    ({"factors": {"tone": []}}, "factors.tone", "empty"),
    ({"factors": {"Tone!": ["a"]}}, "factors.Tone!", "identifier"),
    ({"exclusions": [{"when": {"tone": "sarcastic"}}]}, "exclusions[0].when.tone", "unknown level 'sarcastic'"),
    ({"exclusions": [{"when": {"colour": "red"}}]}, "exclusions[0].when.colour", "unknown factor"),
    ({"exclusions": [{"when": {"tone": "urgent"}, "segments": ["nope"]}]}, "exclusions[0].segments[0]", "not targeted"),
    ({"exclusions": [{"when": {"tone": ["friendly", "urgent", "playful", "premium"]}}]}, "exclusions", "every variant"),
    ({"segments": ["champions", "whales"]}, "segments[1]", "no segment named 'whales'"),
    ({"segments": []}, "segments", "at least 1"),
    ({"holdout_share": 0.6}, "holdout_share", "less than or equal to 0.5"),
    ({"holdout_share": -0.1}, "holdout_share", "greater than or equal to 0"),
    ({"objective": "opens"}, "objective", "click"),
    ({"baseline": {"tone": "grumpy"}}, "baseline.tone", "unknown level"),
    ({"template": {"subject": "{{ tone ", "html": "x", "text": "x"}}, "template.subject", "does not compile"),
    ({"template": {"subject": "{{ colour }}", "html": "x", "text": "x"}}, "template.subject", "undefined variable"),
    ({"template": {"subject": "x", "html": "{{ customer.__class__ }}", "text": "x"}}, "template.html", "private"),
    ({"template": {"subject": "x", "html": "{{ ''|attr('__class__') }}", "text": "x"}}, "template.html", "attr"),
    ({"landing_url": "not a url"}, "landing_url", "URL"),
    ({"unexpected": 1}, "unexpected", "Extra inputs"),
]


@pytest.mark.parametrize(("override", "loc", "message"), BAD_INPUTS, ids=[b[1] for b in BAD_INPUTS])
def test_bad_campaign_gets_422_naming_the_field_and_writes_nothing(api, override, loc, message):
    before = table_counts()
    r = api("POST", "/campaigns", "marketer", json=campaign_payload(**override))
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "invalid_input"
    assert any(d["loc"] == loc and message.lower() in d["msg"].lower() for d in body["detail"]), body
    assert table_counts() == before


def test_lifecycle_moves_forward_only(api):
    cid = api("POST", "/campaigns", "marketer", json=small_campaign_payload()).json()["id"]
    r = api("POST", f"/campaigns/{cid}/periods", "marketer")
    assert r.status_code == 409 and "draft" in r.json()["detail"]
    assert api("POST", f"/campaigns/{cid}/pause", "marketer").status_code == 409
    assert api("POST", f"/campaigns/{cid}/start", "marketer").json()["status"] == "active"
    assert api("POST", f"/campaigns/{cid}/start", "marketer").status_code == 409
    assert api("POST", f"/campaigns/{cid}/pause", "marketer").json()["status"] == "paused"
    assert api("POST", f"/campaigns/{cid}/periods", "marketer").status_code == 409
    assert api("POST", f"/campaigns/{cid}/resume", "marketer").json()["status"] == "active"
    assert api("POST", f"/campaigns/{cid}/complete", "marketer").json()["status"] == "completed"
    r = api("POST", f"/campaigns/{cid}/periods", "marketer")
    assert r.status_code == 409 and "completed" in r.json()["detail"]
    assert api("POST", f"/campaigns/{cid}/explode", "marketer").status_code == 422


def test_only_drafts_are_editable_and_status_is_not_a_field(api):
    cid = api("POST", "/campaigns", "marketer", json=small_campaign_payload()).json()["id"]
    r = api("PATCH", f"/campaigns/{cid}", "marketer", json={"holdout_share": 0.2, "name": "Renamed"})
    assert r.status_code == 200 and r.json()["holdout_share"] == 0.2 and r.json()["name"] == "Renamed"
    assert api("PATCH", f"/campaigns/{cid}", "marketer", json={"status": "active"}).status_code == 422
    bad_template = {"template": {"subject": "{{ nope }}", "html": "x", "text": "x"}}
    assert api("PATCH", f"/campaigns/{cid}", "marketer", json=bad_template).status_code == 422
    api("POST", f"/campaigns/{cid}/start", "marketer")
    r = api("PATCH", f"/campaigns/{cid}", "marketer", json={"name": "Too late"})
    assert r.status_code == 409


def test_unknown_campaign_is_404(api):
    r = api("GET", "/campaigns/999999", "marketer")
    assert r.status_code == 404 and r.json() == {"error": "not_found", "detail": "no campaign with id 999999"}
    assert api("POST", "/campaigns/999999/periods", "marketer").status_code == 404


def test_period_assignments_export_as_csv_and_parquet(api, tmp_path):
    import io

    import pyarrow.parquet as pq

    from campaigns.services import periods

    api("POST", "/customers", "marketer", json={"customers": [
        {"external_id": f"x{i}", "email": f"x{i}@example.com", "segment": "champions"} for i in range(40)]})
    cid = api("POST", "/campaigns", "marketer", json=small_campaign_payload(segments=["champions"])).json()["id"]
    api("POST", f"/campaigns/{cid}/start", "marketer")
    period_id = api("POST", f"/campaigns/{cid}/periods", "marketer").json()["id"]
    assert periods.run_period(period_id) == "completed"  # in process: no worker runs in API tests

    csv_rows = api("GET", f"/campaigns/{cid}/periods/1/sends.csv", "marketer").text.splitlines()
    assert csv_rows[0] == ",".join(periods.EXPORT_COLUMNS) and len(csv_rows) == 41
    r = api("GET", f"/campaigns/{cid}/periods/1/sends.parquet", "marketer")
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(r.content))
    assert table.num_rows == 40 and table.column_names == periods.EXPORT_COLUMNS
    assert sorted(table.column("customer_external_id").to_pylist()) == sorted(f"x{i}" for i in range(40))
    assert set(table.column("status").to_pylist()) == {"sent"}
    assert api("GET", f"/campaigns/{cid}/periods/9/sends.parquet", "marketer").status_code == 404
    assert api("GET", f"/campaigns/{cid}/periods/1/sends.parquet", "analyst").status_code == 403


def test_a_write_is_committed_before_its_response_is_sent(api):
    """The order of events inside the ASGI call: the commit must come before the response starts, so a
    client that got 201 can read its write at once and a failed commit can never look like success."""
    import asyncio
    import json

    from sqlalchemy import event
    from sqlmodel import Session

    order: list[str] = []

    def committed(_session):
        order.append("commit")

    body = json.dumps(small_campaign_payload()).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/campaigns", "raw_path": b"/campaigns", "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"x-api-key", api.keys["marketer"].encode()),
                    (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            order.append(f"response {message['status']}")

    event.listen(Session, "after_commit", committed)
    try:
        asyncio.run(api.client.app(scope, receive, send))
    finally:
        event.remove(Session, "after_commit", committed)
    assert "response 201" in order and order.index("commit") < order.index("response 201"), order
