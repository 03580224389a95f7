"""The marketer's journey through real HTTP (SQLite and PostgreSQL): typed CSV, reach per segment,
the pre-start check against the real audience, preview, schedules that do not fire on start, fixing
a paused campaign's template, and reading the report."""

from datetime import UTC, datetime

from sqlalchemy import select

from campaigns.db import session_scope
from campaigns.models import AuditLog, Campaign, SendPeriod
from tests.factories import small_campaign_payload

CSV = {"Content-Type": "text/csv"}
POINTS = {
    "subject": "{% if customer.loyalty_points > 1000 %}Gold{% else %}Hi{% endif %} {{ tone }}",
    "html": '<p>{{ offer }} {{ customer.first_name }}</p><a href="{{ landing_url }}">go</a>'
            '<a href="{{ unsubscribe_url }}">unsub</a>',
    "text": "{{ offer }} {{ landing_url }} {{ unsubscribe_url }}",
}


def load_customers(api, n: int = 40) -> None:
    rows = ["external_id,email,segment,first_name,loyalty_points,city"]
    for i in range(n):
        city = "Lyon" if i % 4 == 0 else ""  # 3 of 4 have no city
        rows.append(f"m{i},m{i}@example.com,{'champions' if i % 2 else 'hibernating'},N{i},{i * 100},{city}")
    r = api("POST", "/customers/csv", "marketer", headers=CSV, content="\n".join(rows).encode())
    assert r.status_code == 200, r.text


def create(api, **overrides) -> int:
    r = api("POST", "/campaigns", "marketer", json=small_campaign_payload(**{"template": POINTS, **overrides}))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_reach_check_and_start_refused_naming_the_missing_attribute(api):
    load_customers(api)
    cid = create(api, template={**POINTS, "text": "{{ customer.city }} {{ unsubscribe_url }}"})
    reach = api("GET", f"/campaigns/{cid}/audience", "marketer").json()
    assert reach["by_segment"] == {"champions": 20, "hibernating": 20} and reach["total"] == 40
    check = api("GET", f"/campaigns/{cid}/check", "marketer").json()
    assert check["ok"] is False and check["sampled"] == 40 and "customer.city" in check["reads"]
    [problem] = check["problems"]
    assert problem["loc"] == "customer.city" and problem["count"] == 30
    r = api("POST", f"/campaigns/{cid}/start", "marketer")
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"] == "customer.city" and "missing for 30 of 40 sampled customers" in detail["msg"]
    assert api("GET", f"/campaigns/{cid}", "marketer").json()["status"] == "draft"  # nothing changed


def test_a_numeric_comparison_passes_the_check_and_text_numbers_are_named(api):
    load_customers(api)
    cid = create(api)
    assert api("GET", f"/campaigns/{cid}/check", "marketer").json()["ok"] is True
    # customers whose points arrived as text (a JSON import of strings): the check names the attribute
    api("POST", "/customers", "marketer", json={"customers": [
        {"external_id": f"t{i}", "email": f"t{i}@example.com", "segment": "champions",
         "attributes": {"first_name": "T", "loyalty_points": "1200"}} for i in range(3)]})
    check = api("GET", f"/campaigns/{cid}/check", "marketer").json()
    [problem] = check["problems"]
    assert problem["loc"] == "customer.loyalty_points" and problem["count"] == 3
    assert "not supported" in problem["msg"] and "customer.loyalty_points is text" in problem["msg"]


def test_preview_json_html_and_signed_link(api):
    load_customers(api)
    cid = create(api)
    r = api("POST", f"/campaigns/{cid}/preview", "marketer",
            json={"customer": "m15", "variant": {"tone": "urgent", "offer": "free_drink"}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["subject"] == "Gold urgent" and "free_drink N15" in body["html"]
    assert body["headers"]["To"] == "m15@example.com" and "List-Unsubscribe" in body["headers"]
    assert body["variant"]["levels"] == {"tone": "urgent", "offer": "free_drink"} and body["targeted"] is True
    assert api("POST", f"/campaigns/{cid}/preview", "analyst", json={"customer": "m1", "variant": 0}).json()[
        "subject"] == "Hi friendly"
    html = api("GET", f"/campaigns/{cid}/preview.html?customer=m15&variant=tone:urgent,offer:free_drink", "marketer")
    assert html.status_code == 200 and html.text == body["html"]
    signed = api("GET", body["html_url"], None)  # no key: the signed link is enough
    assert signed.status_code == 200 and signed.text == body["html"]
    assert api("GET", body["html_url"].replace("m15", "m13"), None).status_code == 401  # the link names one customer
    assert api("GET", f"/campaigns/{cid}/preview.html?customer=m15&variant=0", None).status_code == 401
    assert api("GET", f"/campaigns/{cid}/preview.html?customer=m15&variant=0", "ingest").status_code == 403
    for bad, loc in (({"customer": "nobody", "variant": 0}, "customer"), ({"customer": "m1", "variant": 99}, "variant"),
                     ({"customer": "m1", "variant": {"colour": "red"}}, "variant.colour")):
        r = api("POST", f"/campaigns/{cid}/preview", "marketer", json=bad)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc, r.text


def test_default_cadence_is_manual_and_a_weekly_schedule_does_not_fire_on_start(api):
    load_customers(api)
    payload = small_campaign_payload(template=POINTS)
    payload.pop("cadence")
    r = api("POST", "/campaigns", "marketer", json=payload)
    manual = r.json()
    assert manual["cadence"] == "manual" and manual["schedule"] is None
    cid = create(api, cadence="weekly", schedule={"weekday": "tuesday", "hour": 10, "timezone": "Europe/Paris"})
    started = api("POST", f"/campaigns/{cid}/start", "marketer").json()
    nxt = datetime.fromisoformat(started["next_period_at"])
    assert nxt > datetime.now(UTC) and nxt.weekday() == 1 and nxt.hour in (8, 9)  # 10:00 in Paris
    with session_scope() as s:
        assert s.execute(select(SendPeriod).where(SendPeriod.campaign_id == cid)).first() is None
    assert api("GET", f"/campaigns/{cid}", "analyst").json()["next_period_at"] == started["next_period_at"]
    for bad, loc in (({"timezone": "Mars/Olympus"}, "schedule.timezone"), ({"cron": "0 9 * *"}, "schedule.cron"),
                     ({"hour": 24}, "schedule.hour")):
        r = api("POST", "/campaigns", "marketer", json=small_campaign_payload(
            cadence="cron" if "cron" in bad else "daily", schedule=bad))
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc, r.text


def test_send_now_starts_the_first_period_at_once(api, queue):
    load_customers(api)
    cid = create(api, cadence="daily", schedule={"hour": 7})
    r = api("POST", f"/campaigns/{cid}/start?send_now=true", "marketer")
    assert r.status_code == 200, r.text
    assert [p["number"] for p in api("GET", f"/campaigns/{cid}/periods", "marketer").json()] == [1]


def test_pause_fix_template_resume_records_a_new_version(api, queue):
    load_customers(api)
    cid = create(api)
    assert api("POST", f"/campaigns/{cid}/start", "marketer").status_code == 200
    fixed = {**POINTS, "subject": "Fixed {{ tone }}"}
    r = api("PATCH", f"/campaigns/{cid}", "marketer", json={"template": fixed})
    assert r.status_code == 409  # active: pause first
    api("POST", f"/campaigns/{cid}/pause", "marketer")
    assert api("PATCH", f"/campaigns/{cid}", "marketer", json={"template": fixed, "name": "x"}).status_code == 409
    broken = {**POINTS, "text": "{{ customer.city }} {{ unsubscribe_url }}"}
    r = api("PATCH", f"/campaigns/{cid}", "marketer", json={"template": broken})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "customer.city"
    r = api("PATCH", f"/campaigns/{cid}", "marketer", json={"template": fixed})
    assert r.status_code == 200, r.text
    assert r.json()["template_version"] == 2
    with session_scope() as s:
        entry = s.execute(select(AuditLog).where(AuditLog.action == "template_version")).scalars().one()
        assert entry.object_id == cid and entry.detail["template_version"] == 2 and entry.detail["from_period"] == 1
        assert s.get(Campaign, cid).subject_template == "Fixed {{ tone }}"
    assert api("POST", f"/campaigns/{cid}/resume", "marketer").json()["status"] == "active"
    preview = api("POST", f"/campaigns/{cid}/preview", "marketer", json={"customer": "m1", "variant": 0}).json()
    assert preview["subject"] == "Fixed friendly" and preview["template_version"] == 2


def test_marketers_read_the_report(api):
    load_customers(api)
    cid = create(api)
    for path in ("report", "report.csv", "report.html"):
        assert api("GET", f"/campaigns/{cid}/{path}", "marketer").status_code == 200, path
    assert api("GET", f"/campaigns/{cid}/report", "ingest").status_code == 403


AUDIENCE_CSV = """external_id,email,segment,first_name,loyalty_points,city,last_visit,vip,lists
a0,a0@example.com,champions,A,1500,Lyon,2026-11-02,true,spring;newsletter
a1,a1@example.com,champions,B,900,Lyon,2026-11-20,false,newsletter
a2,a2@example.com,champions,C,2500,Paris,2026-10-01,true,
a3,a3@example.com,hibernating,D,1200,Lyon,2026-11-15,true,spring
a4,a4@example.com,hibernating,E,50,Nice,2026-12-01,false,spring
a5,a5@example.com,hibernating,F,3000,Lyon,2025-01-01,true,other
"""


def reached(api, audience: dict) -> dict:
    r = api("POST", "/campaigns", "marketer", json=small_campaign_payload(**{"template": POINTS, "audience": audience}))
    assert r.status_code == 201, r.text
    return api("GET", f"/campaigns/{r.json()['id']}/audience", "marketer").json()["by_segment"]


def test_audience_filter_and_lists_are_counted_and_sent_to_in_sql(api, queue):
    from campaigns.services import periods

    assert api("POST", "/customers/csv", "marketer", headers=CSV, content=AUDIENCE_CSV.encode()).status_code == 200
    assert api("GET", "/customers/a0", "marketer").json()["attributes"]["lists"] == ["newsletter", "spring"]
    assert reached(api, {"filter": [{"attribute": "city", "equals": "Lyon"}]}) == {"champions": 2, "hibernating": 2}
    assert reached(api, {"filter": [{"attribute": "city", "one_of": ["Paris", "Nice"]}]}) == {
        "champions": 1, "hibernating": 1}
    assert reached(api, {"filter": [{"attribute": "loyalty_points", "min": 1000, "max": 2500}]}) == {
        "champions": 2, "hibernating": 1}
    assert reached(api, {"filter": [{"attribute": "last_visit", "since": "2026-11-01", "until": "2026-11-30"}]}) == {
        "champions": 2, "hibernating": 1}
    assert reached(api, {"filter": [{"attribute": "vip", "equals": True}]}) == {"champions": 2, "hibernating": 2}
    assert reached(api, {"filter": [{"attribute": "first_name", "min": 1}]}) == {"champions": 0, "hibernating": 0}
    assert reached(api, {"lists": ["spring"]}) == {"champions": 1, "hibernating": 2}
    # every condition and one of the lists: Lyon, 1000+ points, in spring -> a0 and a3
    audience = {"filter": [{"attribute": "city", "equals": "Lyon"}, {"attribute": "loyalty_points", "min": 1000}],
                "lists": ["spring", "nope"]}
    assert reached(api, audience) == {"champions": 1, "hibernating": 1}
    r = api("POST", "/campaigns", "marketer", json=small_campaign_payload(**{
        "template": POINTS, "audience": audience, "holdout_share": 0.0}))
    cid = r.json()["id"]
    assert r.json()["audience"] == audience
    api("POST", f"/campaigns/{cid}/start", "marketer")
    period = api("POST", f"/campaigns/{cid}/periods", "marketer").json()
    assert periods.run_period(period["id"]) == "completed"
    p = api("GET", f"/campaigns/{cid}/periods/1", "marketer").json()
    assert (p["total"], p["sent"], p["failed"]) == (2, 2, 0)
    sent_to = api("GET", f"/campaigns/{cid}/periods/1/sends.csv", "marketer").text
    assert "a0" in sent_to and "a3" in sent_to and "a5" not in sent_to and "a1" not in sent_to


def test_bad_audience_is_422_naming_the_condition(api):
    for audience, loc in (({"filter": [{"attribute": "city"}]}, "audience.filter[0]"),
                          ({"filter": [{"attribute": "x", "min": 5, "max": 1}]}, "audience.filter[0].max"),
                          ({"filter": [{"attribute": "bad name", "equals": 1}]}, "audience.filter[0].attribute"),
                          ({"filter": [{"attribute": "d", "since": "2026-13-01"}]}, "audience.filter[0].since")):
        r = api("POST", "/campaigns", "marketer", json=small_campaign_payload(audience=audience))
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc, (audience, r.text)
