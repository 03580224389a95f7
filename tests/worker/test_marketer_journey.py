"""The marketer's journey end to end on real parts (uvicorn over HTTP, Celery worker and beat,
redis-server, SQLite or PostgreSQL): typed CSV -> a template comparing a number -> a period with no
failures; a missing attribute refuses the start; preview; a weekly schedule that does not fire on
start; an audience filter; pause -> fix the template -> resume, learning kept."""

import email
import email.policy
import time

from tests.factories import small_campaign_payload
from tests.worker.test_end_to_end import client, run_period, stack  # noqa: F401 (the module's stack fixture)

TEMPLATE = {
    "subject": "{% if customer.loyalty_points > 1000 %}Gold{% else %}Hello{% endif %} {{ tone }}",
    "html": '<p>{{ offer }} {{ customer.first_name }}</p><a href="{{ landing_url }}">go</a>'
            '<a href="{{ unsubscribe_url }}">unsub</a>',
    "text": "{{ offer }} {{ landing_url }} {{ unsubscribe_url }}",
}
N = 120


def subjects(home, cid: int, number: int) -> list[str]:
    outbox = home / "outbox" / f"campaign-{cid}" / f"period-{number}"
    return [email.message_from_bytes(f.read_bytes(), policy=email.policy.default)["Subject"]
            for f in outbox.glob("*.eml")]


def test_marketer_journey_end_to_end(stack):  # noqa: F811 (the fixture)
    marketer = client(stack, "marketer")
    assert marketer.post("/segments", json={"name": "journey"}).status_code == 201
    rows = ["external_id,email,segment,first_name,loyalty_points,city,lists"]
    for i in range(N):  # every third customer in the `spring` list; one in four with a city
        rows.append(f"j{i},j{i}@example.com,journey,N{i},{i * 20},{'Lyon' if i % 4 == 0 else ''},"
                    f"{'spring' if i % 3 == 0 else 'other'}")
    r = marketer.post("/customers/csv", content="\n".join(rows).encode(), headers={"Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    payload = small_campaign_payload(segments=["journey"], template=TEMPLATE, cadence="weekly",
                                     schedule={"weekday": "monday", "hour": 9, "timezone": "Europe/Paris"},
                                     audience={"lists": ["spring"]}, holdout_share=0.0)

    # A template reading an attribute most of the audience lacks: the start is refused, naming it.
    broken = marketer.post("/campaigns", json={**payload, "template": {**TEMPLATE, "text": "{{ customer.city }} "
                                                                        "{{ unsubscribe_url }}"}}).json()
    r = marketer.post(f"/campaigns/{broken['id']}/start")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "customer.city", r.text
    assert marketer.get(f"/campaigns/{broken['id']}/periods").json() == []

    cid = marketer.post("/campaigns", json=payload).json()["id"]
    reach = marketer.get(f"/campaigns/{cid}/audience").json()
    assert reach["by_segment"] == {"journey": N // 3}
    preview = marketer.post(f"/campaigns/{cid}/preview", json={"customer": "j60", "variant": 0}).json()
    assert preview["subject"] == "Gold friendly" and "N60" in preview["html"]
    assert marketer.get(preview["html_url"], headers={"X-API-Key": ""}).text == preview["html"]

    # Weekly: nothing is sent on start (beat runs every second here); the next slot is shown.
    started = marketer.post(f"/campaigns/{cid}/start").json()
    assert started["status"] == "active" and started["next_period_at"] is not None
    time.sleep(4)
    assert marketer.get(f"/campaigns/{cid}/periods").json() == []

    # Asked for: the period goes out to the filtered audience with typed comparisons, no failures.
    p1 = run_period(marketer, cid)
    assert (p1["total"], p1["sent"], p1["failed"]) == (N // 3, N // 3, 0)
    got = subjects(stack["home"], cid, 1)
    assert len(got) == N // 3 and sum(s.startswith("Gold") for s in got) == sum(
        1 for i in range(0, N, 3) if i * 20 > 1000)

    # Pause, fix the template (a new version), resume: period 2 uses it and learns on from period 1.
    assert marketer.post(f"/campaigns/{cid}/pause").json()["status"] == "paused"
    r = marketer.patch(f"/campaigns/{cid}", json={"template": {**TEMPLATE, "subject": "New {{ tone }}"}})
    assert r.status_code == 200 and r.json()["template_version"] == 2, r.text
    assert marketer.post(f"/campaigns/{cid}/resume").json()["status"] == "active"
    p2 = run_period(marketer, cid)
    assert (p2["sent"], p2["failed"]) == (N // 3, 0)
    assert all(s.startswith("New ") for s in subjects(stack["home"], cid, 2))
    snaps = [s for s in marketer.get(f"/campaigns/{cid}/allocations").json() if s["period_number"] == 2]
    assert snaps and sum(snaps[0]["counts"]["sends"]) == N // 3  # period 2 was allocated from period 1's sends
    report = marketer.get(f"/campaigns/{cid}/report?fresh=true")  # right after the period: not the stored one
    assert report.status_code == 200  # marketers read their campaign's report, and see the new version in it
    assert [(v["version"], v["from_period"]) for v in report.json()["happened"]["template_versions"]] == [(2, 2)]
