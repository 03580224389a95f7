"""The whole loop on real parts: uvicorn serving the API over HTTP, a Celery worker and beat in
their own processes, a real redis-server, and SQLite or PostgreSQL. Define, load, send, feed back,
reweight, report — and the cadence-driven period that beat starts on its own."""

import csv
import email
import email.policy
import io
import re
import time

import httpx
import pytest

from campaigns.stack import Stack, free_port
from tests.conftest import fresh_database, point_at
from tests.factories import api_keys, campaign_payload, small_campaign_payload

SEGMENTS = ["champions", "loyal_regulars", "big_spenders", "new_or_occasional",
            "cant_lose_them", "at_risk_regulars", "lapsed_big_spenders", "hibernating"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request, workdir, tmp_path_factory):
    home = tmp_path_factory.mktemp(f"stack-{request.param}")
    (home / "logs").mkdir()
    url = fresh_database(request.param, request, workdir)
    port = free_port()
    point_at(url, home / "outbox")
    s = Stack(var_dir=home)
    s.env.update(MAB_DATABASE_URL=url, MAB_OUTBOX_DIR=str(home / "outbox"), MAB_BEAT_INTERVAL_SECONDS="1",
                 MAB_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
                 # the test clicks a link seconds after the send, which the bot rule would exclude
                 MAB_BOT_MIN_SECONDS_AFTER_SEND="0")
    try:
        s.env["MAB_REDIS_URL"] = s.start_redis()  # a broker of its own: no stray tasks from other tests
        s.start_services("127.0.0.1", port, concurrency=2)
        keys = api_keys()
        yield {"url": f"http://127.0.0.1:{port}", "keys": keys, "home": home, "stack": s}
    finally:
        s.stop()


def client(stack, role: str) -> httpx.Client:
    return httpx.Client(base_url=stack["url"], headers={"X-API-Key": stack["keys"][role]}, timeout=60)


def wait_until(probe, what: str, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def run_period(marketer: httpx.Client, cid: int) -> dict:
    r = marketer.post(f"/campaigns/{cid}/periods")
    assert r.status_code == 202, r.text
    number = r.json()["number"]

    def done():
        r = marketer.get(f"/campaigns/{cid}/periods/{number}")
        assert r.status_code == 200, r.text
        p = r.json()
        return p if p["status"] in ("completed", "failed") else None

    period = wait_until(done, f"period {number}")
    assert period["status"] == "completed", period
    return period


def current_report(analyst: httpx.Client, cid: int) -> dict:
    """The stored report once the workers have brought it up to date: a read of a report behind its
    data asks them to recompute it, and beat recomputes every report behind on its own."""
    return wait_until(lambda: (rep := analyst.get(f"/campaigns/{cid}/report").json())["freshness"]["state"] == "current"
                      and rep, "the workers to bring the report up to date")


def test_the_loop_define_send_feedback_reweight_report(stack):
    marketer, ingest, analyst = (client(stack, r) for r in ("marketer", "ingest", "analyst"))
    n = 2_400
    body = "external_id,email,segment,first_name\n" + "".join(
        f"e{i},e{i}@example.com,{SEGMENTS[i % 8]},N{i}\n" for i in range(n))
    r = marketer.post("/customers/csv", content=body.encode(), headers={"Content-Type": "text/csv"})
    assert r.json() == {"received": n, "inserted": n, "updated": 0}

    r = marketer.post("/campaigns", json=campaign_payload(objective="click", holdout_share=0.1))
    assert r.status_code == 201, r.text
    campaign = r.json()
    cid = campaign["id"]
    assert campaign["variant_count"] == 200
    variants = {v["arm"]: v["params"] for v in marketer.get(f"/campaigns/{cid}/variants").json()}
    assert marketer.post(f"/campaigns/{cid}/start").json()["status"] == "active"

    # Period 1: every customer exactly once, in the ledger and in the outbox.
    p1 = run_period(marketer, cid)
    assert (p1["total"], p1["sent"], p1["failed"]) == (n, n, 0)
    outbox = stack["home"] / "outbox" / f"campaign-{cid}" / "period-1"
    files = list(outbox.glob("*.eml"))
    assert len(files) == n
    rows = list(csv.DictReader(io.StringIO(marketer.get(f"/campaigns/{cid}/periods/1/sends.csv").text)))
    assert len(rows) == n and len({r["customer_external_id"] for r in rows}) == n

    # Feedback: the hidden truth is that the urgent tone gets clicks. Every event is posted twice.
    clicked = [r for r in rows if r["arm"] != "-1" and variants[int(r["arm"])]["tone"] == "urgent"]
    batch = [{"event_id": f"clk-{r['send_id']}", "type": "click", "send_id": int(r["send_id"])} for r in clicked]
    for _ in range(2):
        assert ingest.post("/events", json={"events": batch}).status_code == 202

    # A click through a real tracking link from a real email: recorded and redirected (307).
    msg = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    link = re.search(r"/t/[\w.]+", msg.get_body(("plain",)).get_content()).group(0)
    browser = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"}
    r = httpx.get(stack["url"] + link, follow_redirects=False, headers=browser)
    assert r.status_code == 307 and r.headers["location"] == campaign["landing_url"]
    assert httpx.get(stack["url"] + link[:-3] + "abc", follow_redirects=False).status_code == 404
    send_of_link = int(link.split(".")[1])
    events_applied = len(clicked) + 1
    # clicks count customers who clicked: a second click on the same send is an event, not a click
    expected = len(clicked) + (0 if any(int(r["send_id"]) == send_of_link for r in clicked) else 1)

    report = wait_until(lambda: (rep := current_report(analyst, cid))["events"]["applied"] >= events_applied and rep,
                        "events folded in")
    assert report["events"]["applied"] == events_applied  # each event posted twice, counted once
    report = current_report(analyst, cid)  # read once every event has committed
    clicks_in_report = sum(s["bandit"]["clicks"] + s["control"]["clicks"] for s in report["segments"])
    assert clicks_in_report == expected, (len(clicked), send_of_link, report["events"], report["overall"])

    # Period 2 reads the updated posterior: snapshot counts include the feedback, urgent gains weight.
    run_period(marketer, cid)
    snaps = marketer.get(f"/campaigns/{cid}/allocations").json()
    assert len(snaps) == 16 and {s["period_number"] for s in snaps} == {1, 2}
    second = [s for s in snaps if s["period_number"] == 2]
    assert sum(sum(s["counts"]["clicks"]) for s in second) == expected - (send_of_link in {
        int(r["send_id"]) for r in rows if r["arm"] == "-1"})  # the holdout is not an arm
    shares = {}
    for snap in second:
        assert abs(sum(snap["weights"]) - 1) < 1e-9
        shares[snap["segment"]] = sum(w for a, w in zip(snap["arms"], snap["weights"], strict=True)
                                      if variants[a]["tone"] == "urgent")
    # A quarter of the arms gains weight in every segment. Only clicks came back, and the sends are
    # inside the attribution window (their conversions are pending), so the engine leans, not commits.
    assert min(shares.values()) > 0.28, shares  # uniform would give 0.25

    report = current_report(analyst, cid)
    assert report["overall"]["bandit"]["sends"] + report["overall"]["control"]["sends"] == 2 * n
    assert report["periods"] == 2 and len(report["segments"]) == 8
    lift = report["overall"]["lift"]["click_rate"]
    assert lift["bandit"] > lift["control"] and lift["absolute_lift_ci95"][0] <= lift["absolute_lift"]
    assert all(seg["allocation"]["period"] == 2 for seg in report["segments"])
    assert marketer.get(f"/campaigns/{cid}/report").json()["overall"] == report["overall"]  # marketers read it too

    # One-click unsubscribe (RFC 8058): effective for every later send.
    unsub = re.search(r"/u/[\w.]+", msg["List-Unsubscribe"]).group(0)
    page = httpx.get(stack["url"] + unsub)
    assert page.status_code == 200 and "<form" in page.text  # a GET only asks
    for _ in range(2):
        assert httpx.post(stack["url"] + unsub, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    p3 = run_period(marketer, cid)
    assert p3["total"] == n - 1


def test_beat_starts_due_periods_on_its_own(stack):
    marketer = client(stack, "marketer")
    assert marketer.post("/segments", json={"name": "beat_test"}).status_code == 201
    marketer.post("/customers", json={"customers": [
        {"external_id": f"b{i}", "email": f"b{i}@example.com", "segment": "beat_test"} for i in range(10)]})
    # every minute: the first period is the next minute's slot, never the start itself
    r = marketer.post("/campaigns", json=small_campaign_payload(cadence="cron", schedule={"cron": "* * * * *"},
                                                                segments=["beat_test"]))
    cid = r.json()["id"]
    started = marketer.post(f"/campaigns/{cid}/start").json()
    assert started["next_period_at"] is not None and marketer.get(f"/campaigns/{cid}/periods").json() == []
    periods = wait_until(
        lambda: [p for p in marketer.get(f"/campaigns/{cid}/periods").json() if p["status"] == "completed"],
        "beat to run the first period")
    assert periods[0]["number"] == 1 and periods[0]["sent"] == 10
    # The next one is due at the next slot, after the one just sent.
    nxt = marketer.get(f"/campaigns/{cid}").json()["next_period_at"]
    assert nxt is not None and nxt > started["next_period_at"]


def test_operator_sends_a_period_from_the_cli_with_progress(stack):
    import subprocess
    import sys

    marketer = client(stack, "marketer")
    assert marketer.post("/segments", json={"name": "cli_test"}).status_code == 201
    marketer.post("/customers", json={"customers": [
        {"external_id": f"cli{i}", "email": f"cli{i}@example.com", "segment": "cli_test"} for i in range(300)]})
    cid = marketer.post("/campaigns", json=small_campaign_payload(segments=["cli_test"])).json()["id"]
    env = stack["stack"].env
    cmd = [sys.executable, "-m", "campaigns.cli", "send", str(cid), "--poll", "0.2"]
    draft = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert draft.returncode == 1 and f"campaign {cid} is draft" in draft.stdout
    marketer.post(f"/campaigns/{cid}/start")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "period 1 completed: 300 sent, 0 failed of 300" in done.stdout


def test_a_period_in_waves_waits_then_beat_sends_the_rest_from_the_clicks(stack):
    """Test, then send, on the real stack: wave 1 goes out, the period waits, clicks arrive, beat
    plans wave 2 when the wait is over, and every customer is mailed once (ledger and outbox)."""
    marketer, ingest = client(stack, "marketer"), client(stack, "ingest")
    n = 800
    assert marketer.post("/segments", json={"name": "waves_test"}).status_code == 201
    marketer.post("/customers", json={"customers": [
        {"external_id": f"w{i}", "email": f"w{i}@example.com", "segment": "waves_test"} for i in range(n)]})
    r = marketer.post("/campaigns", json=small_campaign_payload(
        segments=["waves_test"], objective="click", holdout_share=0.1,
        waves={"first_share": 0.25, "wait_hours": 0.01}))  # 36 s
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    variants = {v["arm"]: v["params"] for v in marketer.get(f"/campaigns/{cid}/variants").json()}
    marketer.post(f"/campaigns/{cid}/start")
    assert marketer.post(f"/campaigns/{cid}/periods").status_code == 202

    waiting = wait_until(lambda: (p := marketer.get(f"/campaigns/{cid}/periods/1").json())["state"] == "waiting"
                         and p, "wave 1 to be sent")
    assert waiting["sent"] == waiting["total"] == round(0.25 * n) and waiting["next_wave_at"]
    assert "wave 2" in waiting["state_reason"]
    rows = list(csv.DictReader(io.StringIO(marketer.get(f"/campaigns/{cid}/periods/1/sends.csv").text)))
    clicked = [r for r in rows if r["arm"] != "-1" and variants[int(r["arm"])]["offer"] == "two_for_one"]
    assert clicked
    batch = [{"event_id": f"wclk-{r['send_id']}", "type": "click", "send_id": int(r["send_id"])} for r in clicked]
    assert ingest.post("/events", json={"events": batch}).status_code == 202

    done = wait_until(lambda: (p := marketer.get(f"/campaigns/{cid}/periods/1").json())["status"] == "completed"
                      and p, "beat to send wave 2", timeout=180)
    assert (done["total"], done["sent"], done["failed"], done["wave"]) == (n, n, 0, 2)
    rows = list(csv.DictReader(io.StringIO(marketer.get(f"/campaigns/{cid}/periods/1/sends.csv").text)))
    assert len(rows) == n and len({r["customer_external_id"] for r in rows}) == n
    assert len(list((stack["home"] / "outbox" / f"campaign-{cid}" / "period-1").glob("*.eml"))) == n
    snaps = marketer.get(f"/campaigns/{cid}/allocations").json()
    assert sorted(s["wave"] for s in snaps) == [1, 2]
    second = next(s for s in snaps if s["wave"] == 2)
    assert sum(second["counts"]["clicks"]) == len(clicked)  # the clicks informed it
    favoured = sum(w for a, w in zip(second["arms"], second["weights"], strict=True)
                   if variants[a]["offer"] == "two_for_one")
    assert favoured > 1 / 3  # a third of the arms; uniform would give 1/3
