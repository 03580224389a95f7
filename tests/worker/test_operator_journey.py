"""The operator's journey, as an operator runs it: `mab up` in a scratch folder (a real process,
with its own redis-server, Celery worker, beat and API), then

- kill -9 of the worker's pool processes, then of its main process, mid-period: the API keeps
  answering, `mab up` restarts the worker, the period completes by itself (no pause, no resume, no
  waiting for the broker's visibility timeout) and every customer is mailed exactly once, in the
  ledger and in the outbox;
- `mab send` beside it, with no environment set by hand;
- a template that fails for most customers: the period halts early and the campaign pauses with
  the reason; the data is fixed, the campaign resumed, and the rest is sent exactly once.

Only the sweeper's interval and the chunk lease are shortened (the defaults, 30 s and 120 s, would
make the test wait minutes); everything else is `mab up`'s defaults.
"""

import email
import email.policy
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from campaigns.stack import free_port
from tests.factories import small_campaign_payload

N = 20_000
MAB = str(Path(sys.executable).with_name("mab"))


def clean_env(**extra: str) -> dict:
    """The environment of a person's shell: none of the MAB_ variables the test run itself set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAB_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    return {**env, **extra}


def children_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def worker_main(up_pid: int) -> int:
    return next(p for p in children_of(up_pid) if " worker " in cmdline(p) and "celery" in cmdline(p))


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    home = tmp_path_factory.mktemp("operator")
    port = free_port()
    env = clean_env(MAB_SWEEP_INTERVAL_SECONDS="2", MAB_CHUNK_LEASE_SECONDS="10", MAB_SEND_CHUNK_SIZE="1000",
                    MAB_SEND_COMMIT_EVERY="100")
    log = open(home / "up.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([MAB, "up", "--port", str(port)], cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while not (home / "var" / "stack.json").exists() or not (home / "var" / "admin.key").exists():
        assert proc.poll() is None, (home / "up.log").read_text()
        assert time.monotonic() < deadline, (home / "up.log").read_text()
        time.sleep(0.3)
    key = (home / "var" / "admin.key").read_text().strip()
    yield {"url": url, "home": home, "proc": proc, "env": env,
           "api": httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60)}
    proc.send_signal(signal.SIGINT)
    proc.wait(60)
    log.close()


def load(up, n: int, city_every: int = 1, prefix: str = "f", segments=("champions", "hibernating")) -> None:
    """n customers over two segments; one in `city_every` has a city."""
    rows = "".join(f"{prefix}{i},{prefix}{i}@example.com,{segments[i % 2]},"
                   f"{'Lyon' if i % city_every == 0 else ''}\n" for i in range(n))
    r = up["api"].post("/customers/csv", content=("external_id,email,segment,city\n" + rows).encode(),
                       headers={"Content-Type": "text/csv"})
    assert r.status_code == 200, r.text


def create(up, **overrides) -> int:
    r = up["api"].post("/campaigns", json=small_campaign_payload(holdout_share=0.0, **overrides))
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    assert up["api"].post(f"/campaigns/{cid}/start").status_code == 200
    return cid


def period(up, cid: int, number: int = 1) -> dict:
    r = up["api"].get(f"/campaigns/{cid}/periods/{number}")
    assert r.status_code == 200, r.text
    return r.json()


def wait(probe, what: str, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def settled(up, cid: int) -> dict:
    """The period once its counts stopped moving (two reads a second apart agree)."""
    before = period(up, cid)
    while True:
        time.sleep(1)
        now = period(up, cid)
        if (now["sent"], now["failed"]) == (before["sent"], before["failed"]):
            return now
        before = now


def mailed(up, cid: int, number: int = 1) -> Counter:
    outbox = up["home"] / "var" / "outbox" / f"campaign-{cid}" / f"period-{number}"
    return Counter(str(email.message_from_bytes(f.read_bytes(), policy=email.policy.default)["To"]).split("@")[0]
                   for f in outbox.glob("*.eml"))


def ledger(up, cid: int, number: int = 1) -> list[list[str]]:
    return [r.split(",") for r in up["api"].get(f"/campaigns/{cid}/periods/{number}/sends.csv").text.splitlines()[1:]]


def health_latency(up) -> float:
    started = time.monotonic()
    assert httpx.get(f"{up['url']}/health", timeout=5).status_code == 200
    return time.monotonic() - started


def test_kill_9_of_the_worker_children_then_its_main_process(up):
    load(up, N)
    cid = create(up)
    assert up["api"].post(f"/campaigns/{cid}/periods").status_code == 202
    wait(lambda: period(up, cid)["sent"] > N * 0.15, "15% sent")
    main = worker_main(up["proc"].pid)
    for child in children_of(main):  # the pool processes first: the main process hands their tasks back
        os.kill(child, signal.SIGKILL)
    wait(lambda: period(up, cid)["sent"] > N * 0.4, "sending to go on after the pool processes died", 120)
    os.kill(worker_main(up["proc"].pid), signal.SIGKILL)  # then the main process, and with it the pool
    killed = time.monotonic()
    assert health_latency(up) < 1.0  # the API keeps answering
    assert period(up, cid)["status"] == "running"
    done = wait(lambda: (p := period(up, cid))["status"] == "completed" and p, "the period to complete by itself")
    print(f"kill -9 of the worker to a completed period: {time.monotonic() - killed:.1f} s")
    rows = ledger(up, cid)
    sent = Counter(r[1] for r in rows if r[-1] == "sent")
    assert set(sent) == {f"f{i}" for i in range(N)} and max(sent.values()) == 1  # the ledger: all, once
    assert mailed(up, cid) == sent  # the outbox agrees
    assert done["sent"] == N and done["failed"] == 0 and done["state"] == "completed"
    assert "restarted" in (up["home"] / "up.log").read_text()  # mab up said what it did


def test_mab_send_beside_mab_up(up):
    cid = create(up)
    r = subprocess.run([MAB, "send", str(cid), "--poll", "0.5"], cwd=up["home"], env=clean_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "period 1 completed" in r.stdout and "Traceback" not in r.stdout + r.stderr
    assert period(up, cid)["sent"] == N
    # a second period works too: nothing was left stuck
    assert up["api"].post(f"/campaigns/{cid}/periods").status_code == 202


def test_mab_send_without_a_broker_writes_nothing(up, tmp_path):
    r = subprocess.run([MAB, "send", "1"], cwd=tmp_path, env=clean_env(MAB_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no broker answers" in r.stdout, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr and not (tmp_path / "var" / "mab.db").exists()


def load_json(up, n: int, city_every: int, segments: tuple[str, str]) -> None:
    """n customers by JSON; one in `city_every` has a `city` attribute, the others none at all."""
    people = [{"external_id": f"h{i}", "email": f"h{i}@example.com", "segment": segments[i % 2],
               "attributes": {"city": "Lyon"} if i % city_every == 0 else {}} for i in range(n)]
    r = up["api"].post("/customers", json={"customers": people})
    assert r.status_code == 200, r.text


def test_a_template_failing_for_most_customers_halts_the_period_then_a_fix_sends_the_rest(up):
    n = 4_000
    segments = ("loyal_regulars", "at_risk_regulars")  # segments of their own: only these customers
    load_json(up, n, city_every=1, segments=segments)
    html = ('<p>{{ offer }} in {{ customer.city }}</p><a href="{{ landing_url }}">go</a>'
            '<a href="{{ unsubscribe_url }}">unsub</a>')
    base = small_campaign_payload()["template"]
    cid = create(up, segments=list(segments), template={**base, "html": html})
    load_json(up, n, city_every=4, segments=segments)  # after the start, a new import: 75% without a city
    assert up["api"].post(f"/campaigns/{cid}/periods").status_code == 202
    wait(lambda: period(up, cid)["state"] == "paused", "the period to halt", 120)
    halted = settled(up, cid)  # the other worker's batch in flight when the halt came is recorded too
    campaign = up["api"].get(f"/campaigns/{cid}").json()
    assert campaign["status"] == "paused" and "halted" in campaign["status_reason"]
    assert "city" in campaign["status_reason"] and "city" in halted["error"]
    top = halted["failures"][0]
    assert "city" in top["reason"] and top["count"] > 0 and len(top["examples"]) == 3
    tried = halted["sent"] + halted["failed"]
    assert tried < halted["total"] / 2  # stopped before most of the audience was spent
    print(f"halted after {tried} of {halted['total']} tried, {halted['failed'] / tried:.0%} failed")
    metrics = httpx.get(f"{up['url']}/metrics").text
    counted = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
               if line.startswith(("mab_period_halts_total", "mab_periods_in_flight"))}
    assert counted.get("mab_period_halts_total", 0) >= 1, [x for x in metrics.splitlines() if "halt" in x]
    assert 'mab_send_failures_total{kind="render:UndefinedError"}' in metrics
    assert 'mab_periods_in_flight{state="paused"} 1.0' in metrics
    assert "failed" in (up["home"] / "var" / "logs" / "worker.log").read_text()  # the chunk's log line

    load_json(up, n, city_every=1, segments=segments)  # the fix: every customer has a city again
    r = up["api"].post(f"/campaigns/{cid}/resume")
    assert r.status_code == 200 and r.json()["status"] == "active", r.text
    done = wait(lambda: (p := period(up, cid))["status"] == "completed" and p, "the rest to be sent")
    assert done["error"] is None and done["sent"] + done["failed"] == done["total"]
    assert done["failed"] == halted["failed"]  # the failures before the halt, no new one
    rows = ledger(up, cid)
    assert Counter(r[1] for r in rows).most_common(1)[0][1] == 1
    sent = Counter(r[1] for r in rows if r[-1] == "sent")
    assert mailed(up, cid) == sent and len(sent) == done["sent"]
    # the report tells the story: the halt, its reason, and the failures by reason
    happened = up["api"].get(f"/campaigns/{cid}/report?fresh=true").json()["happened"]
    assert [h["period"] for h in happened["failure_halts"]] == [1] and "city" in happened["failure_halts"][0]["reason"]
    assert happened["failed_sends"] == done["failed"]
    assert "halted" in up["api"].get(f"/campaigns/{cid}/report.html?fresh=true").text
