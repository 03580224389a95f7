"""Monitoring on real parts (the `mab up` stack: uvicorn, a prefork Celery worker, beat, redis-server,
SQLite): the API's /metrics sums what the worker's child processes counted; beat runs the guard, which
pauses a campaign whose period's unsubscribe rate passes the threshold, visibly; every process logs
JSON lines with the task context, and uvicorn's access log (client IPs, raw paths) is off."""

import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from campaigns.stack import Stack, free_port
from tests.conftest import fresh_database, point_at
from tests.factories import api_keys, customers, small_campaign_payload
from tests.worker.test_end_to_end import wait_until


@pytest.fixture(scope="module")
def stack(request, workdir, tmp_path_factory):
    home = tmp_path_factory.mktemp("stack-monitoring")
    (home / "logs").mkdir()
    (home / "metrics").mkdir()
    (home / "metrics" / "counter_999999.db").write_bytes(b"")  # a file of an earlier run's dead process
    url = fresh_database("sqlite", request, workdir)
    port = free_port()
    point_at(url, home / "outbox")
    s = Stack(var_dir=home)
    s.env.update(MAB_DATABASE_URL=url, MAB_OUTBOX_DIR=str(home / "outbox"), MAB_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
                 MAB_GUARD_INTERVAL_SECONDS="1", MAB_LOG_FORMAT="json", MAB_GUARD_MIN_SENDS="500")
    try:
        s.env["MAB_REDIS_URL"] = s.start_redis()
        s.start_services("127.0.0.1", port, concurrency=2)
        yield {"url": f"http://127.0.0.1:{port}", "keys": api_keys(), "home": home}
    finally:
        s.stop()


def scrape(st) -> dict[tuple[str, tuple], float]:
    r = httpx.get(f"{st['url']}/metrics", timeout=30)
    assert r.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def log_lines(st, name: str) -> list[dict]:
    return [json.loads(line) for line in (st["home"] / "logs" / name).read_text().splitlines()
            if line.startswith("{")]


def test_the_api_scrape_shows_what_worker_processes_counted(stack):
    assert not (stack["home"] / "metrics" / "counter_999999.db").exists()  # `mab up` cleared it
    guard = {"task": "worker.tasks.guard_campaigns"}
    samples = wait_until(
        lambda: (s := scrape(stack)) and value(s, "mab_tasks_total", state="SUCCESS", **guard) >= 2 and s,
        "beat's guard runs, counted in the worker's children, in the API's scrape", timeout=60)
    assert value(samples, "mab_task_duration_seconds_count", **guard) >= 2
    assert value(samples, "mab_scrape_source_up", source="queue") == 1
    assert ("mab_queue_messages", (("queue", "mab"),)) in samples
    r = httpx.get(f"{stack['url']}/ready", timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "ready"


def test_beat_runs_the_guard_and_the_pause_is_visible(stack):
    marketer = httpx.Client(base_url=stack["url"], headers={"X-API-Key": stack["keys"]["marketer"]}, timeout=60)
    assert marketer.post("/customers", json={"customers": customers(600, prefix="g")}).status_code in (200, 201)
    cid = marketer.post("/campaigns", json=small_campaign_payload()).json()["id"]
    assert marketer.post(f"/campaigns/{cid}/start").status_code == 200
    number = marketer.post(f"/campaigns/{cid}/periods").json()["number"]
    wait_until(lambda: marketer.get(f"/campaigns/{cid}/periods/{number}").json()["status"] == "completed",
               "the period", timeout=120)
    rows = marketer.get(f"/campaigns/{cid}/periods/{number}/sends.csv").text.splitlines()[1:]
    send_ids = [int(row.split(",")[0]) for row in rows]
    assert len(send_ids) == 600

    from campaigns import signing

    for send_id in send_ids[:7]:  # 7 / 600 = 1.2% > 1.0%
        r = httpx.post(f"{stack['url']}/u/{signing.sign('unsub', send_id)}", data={"List-Unsubscribe": "One-Click"})
        assert r.status_code == 200
    wait_until(lambda: marketer.get(f"/campaigns/{cid}").json()["status"] == "paused", "the guard", timeout=60)
    reason = "auto-paused: unsubscribe rate 1.2% (7 of 600 sends) in period 1 exceeds 1.0%"
    assert value(scrape(stack), "mab_guard_pauses_total", rule="unsubscribe") == 1
    body = marketer.get(f"/campaigns/{cid}").json()
    assert body["status_reason"] == reason
    warned = wait_until(lambda: [line for line in log_lines(stack, "worker.log")
                                 if line["logger"] == "campaigns.services.guard"], "the guard's log line")
    assert warned[0]["level"] == "WARNING" and warned[0]["message"] == reason
    assert (warned[0]["campaign_id"], warned[0]["task"]) == (cid, "worker.tasks.guard_campaigns")


def test_every_process_logs_json_lines_and_no_access_log_with_client_addresses(stack):
    worker, api = log_lines(stack, "worker.log"), log_lines(stack, "api.log")
    assert any(line.get("task") == "worker.tasks.run_period" and isinstance(line.get("period_id"), int)
               for line in worker)
    assert any(line.get("task") == "worker.tasks.deliver_chunk" and isinstance(line.get("chunk_id"), int)
               for line in worker)
    assert any(line["logger"] == "api.access" and line["route"] == "/metrics" for line in api)
    assert not any(line["logger"] == "uvicorn.access" for line in api)
    assert "127.0.0.1:" not in "".join(json.dumps(line) for line in api if line["logger"] == "api.access")
    assert log_lines(stack, "beat.log"), "beat logs JSON lines too"
