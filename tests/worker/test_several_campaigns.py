"""Several campaigns at once, end to end: uvicorn serving the API over HTTP, a Celery worker (two
processes) and beat in their own processes, a real redis-server and PostgreSQL. Two campaigns
target the same customers under a frequency cap of one; beat starts both periods in the same tick
and two workers plan them at the same time. Every customer gets at most one email, and the split
follows the rule: the higher priority gets them, the other period and report say so."""

import email
import email.policy
from collections import Counter

import pytest

from campaigns.stack import Stack, free_port
from tests.conftest import fresh_database, point_at
from tests.factories import api_keys, small_campaign_payload
from tests.worker.test_end_to_end import client, current_report, wait_until

N = 120


@pytest.fixture(scope="module")
def stack(request, workdir, tmp_path_factory):
    home = tmp_path_factory.mktemp("stack-multi")
    (home / "logs").mkdir()
    url = fresh_database("postgresql", request, workdir)
    port = free_port()
    point_at(url, home / "outbox")
    s = Stack(var_dir=home)
    s.env.update(MAB_DATABASE_URL=url, MAB_OUTBOX_DIR=str(home / "outbox"), MAB_BEAT_INTERVAL_SECONDS="1",
                 MAB_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", MAB_FREQUENCY_CAP="1",
                 MAB_SWEEP_INTERVAL_SECONDS="2", MAB_CHUNK_LEASE_SECONDS="10")
    try:
        s.env["MAB_REDIS_URL"] = s.start_redis()
        s.start_services("127.0.0.1", port, concurrency=2)
        yield {"url": f"http://127.0.0.1:{port}", "keys": api_keys(), "home": home, "stack": s}
    finally:
        s.stop()


def recipients(home, cid: int) -> list[str]:
    files = (home / "outbox" / f"campaign-{cid}").glob("period-*/*.eml")
    return [str(email.message_from_bytes(f.read_bytes(), policy=email.policy.default)["To"]) for f in files]


def test_two_campaigns_under_a_cap_of_one_share_customers_by_rank(stack):
    marketer, analyst = client(stack, "marketer"), client(stack, "analyst")
    for name in ("multi_a", "multi_b"):
        assert marketer.post("/segments", json={"name": name}).status_code == 201
    r = marketer.post("/customers", json={"customers": [
        {"external_id": f"m{i}", "email": f"m{i}@example.com", "segment": ("multi_a", "multi_b")[i % 2]}
        for i in range(N)]})
    assert r.status_code in (200, 202), r.text
    every_minute = {"cadence": "cron", "schedule": {"cron": "* * * * *"}, "segments": ["multi_a", "multi_b"]}
    low = marketer.post("/campaigns", json=small_campaign_payload(name="low", **every_minute)).json()
    high = marketer.post("/campaigns", json=small_campaign_payload(name="high", priority=3, **every_minute)).json()
    for c in (low, high):  # both due at the same next minute: beat starts them in one tick
        assert marketer.post(f"/campaigns/{c['id']}/start").status_code == 200

    def first_period(cid):
        r = marketer.get(f"/campaigns/{cid}/periods/1")
        return r.json() if r.status_code == 200 and r.json()["status"] == "completed" else None

    done_high = wait_until(lambda: first_period(high["id"]), "beat to start and the workers to send", timeout=150)
    done_low = wait_until(lambda: first_period(low["id"]), "the lower-ranked period to finish", timeout=60)
    for c in (low, high):  # no second period before this test has looked
        assert marketer.post(f"/campaigns/{c['id']}/pause").status_code == 200

    got_high, got_low = recipients(stack["home"], high["id"]), recipients(stack["home"], low["id"])
    per_customer = Counter(got_high + got_low)
    assert len(per_customer) == N and set(per_customer.values()) == {1}  # everyone once, nobody twice
    assert len(got_high) == N and got_low == []  # the higher priority got them all
    assert (done_high["sent"], done_low["total"]) == (N, 0)
    assert done_low["lost_to"] == {str(high["id"]): N} and done_high["lost_to"] == {}
    shared = current_report(analyst, low["id"])["shared_customers"]
    assert shared["lost"] == N
    assert shared["by_campaign"][0]["text"] == f"{N} of your targeted customers went to campaign {high['id']} (high)"
