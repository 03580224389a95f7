"""Shared by bench_events.py and load_test.py (benchmark code, not part of the service).

* `RawHTTP`: a minimal HTTP/1.1 keep-alive client on asyncio streams. The load generator shares the
  2 cores with the server, so a request must cost it little: it writes prebuilt request bytes and
  parses the status line, the headers it needs and a Content-Length or chunked body, nothing else.
* `open_loop`: requests fired at a fixed rate whatever the answers. Latency is measured from the
  moment a request was *due*, so a server that falls behind cannot hide its queue (no coordinated
  omission); the scheduler's own lateness is reported beside it.
* `Service`: a throwaway PostgreSQL (tests/servers.py) or SQLite file, and `campaigns.stack.Stack`'s
  redis-server, Celery worker, beat and uvicorn exactly as `mab up` starts them, plus on request a
  bare FastAPI app under the same uvicorn command line; a populated database built through the
  service functions (campaigns.services.*, not timed).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from campaigns.stack import Stack, api_workers_option, free_port, wait_for  # noqa: E402 (light: httpx, redis, settings)

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
SEGMENTS = ["champions", "loyal_regulars", "big_spenders", "new_or_occasional",
            "cant_lose_them", "at_risk_regulars", "lapsed_big_spenders", "hibernating"]
IDLE_REUSE_SECONDS = 3.0  # uvicorn closes idle keep-alive connections after 5 s: never reuse older ones

BARE_APP = '''"""The baseline: a bare FastAPI app with the same route shapes and nothing behind them."""
import json

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse

app = FastAPI()


@app.get("/t/{token}", status_code=307, response_class=RedirectResponse)
def click(token: str):  # a sync route, like the real one: it runs in the same thread pool
    return RedirectResponse("https://restaurant.example.com/order", status_code=307)


@app.post("/events", status_code=202)
async def events(request: Request):  # reads and parses the body, validates nothing, queues nothing
    return JSONResponse({"accepted": len(json.loads(await request.body())["events"])}, status_code=202)
'''


# ------------------------------------------------------------------------------------ HTTP client

class _Conn:
    __slots__ = ("reader", "writer", "used")

    def __init__(self, reader, writer):
        self.reader, self.writer, self.used = reader, writer, 0.0

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # noqa: S110 (already gone)
            pass

    async def roundtrip(self, raw: bytes) -> tuple[int, bytes, bool]:
        self.writer.write(raw)
        if len(raw) > 65536:
            await self.writer.drain()
        r = self.reader
        line = await r.readline()
        if not line:
            raise ConnectionResetError("the server closed the connection before answering")
        status = int(line.split(None, 2)[1])
        length, chunked, close = None, False, False
        while True:
            h = await r.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            name, _, value = h.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if chunked:
            body = bytearray()
            while True:
                size = int((await r.readline()).split(b";")[0], 16)
                if size == 0:
                    while (await r.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                body += await r.readexactly(size)
                await r.readexactly(2)
            return status, bytes(body), close
        if length is not None:
            return status, await r.readexactly(length), close
        return status, await r.read(), True


class RawHTTP:
    """A pool of keep-alive connections to one server; grows as concurrency needs."""

    def __init__(self, port: int, host: str = "127.0.0.1", headers: dict | None = None):
        self.host, self.port = host, port
        self.base_headers = {"Host": f"{host}:{port}", **(headers or {})}
        self.idle: list[_Conn] = []
        self.opened = 0

    def build(self, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> bytes:
        h = {**self.base_headers, **(headers or {})}
        if body or method in ("POST", "PUT", "PATCH"):
            h["Content-Length"] = str(len(body))
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        return head.encode("latin-1") + body

    async def _open(self) -> _Conn:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        self.opened += 1
        return _Conn(reader, writer)

    async def _take(self) -> tuple[_Conn, bool]:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if now - conn.used < IDLE_REUSE_SECONDS:
                return conn, True
            conn.close()
        return await self._open(), False

    async def send(self, raw: bytes, timeout: float = 60.0, retry_idempotent: bool = True) -> tuple[int, bytes]:
        conn, reused = await self._take()
        try:
            status, body, close = await asyncio.wait_for(conn.roundtrip(raw), timeout)
        except ConnectionResetError:
            conn.close()
            # A reused connection the server had just closed: nothing was answered. GETs are retried
            # once on a fresh connection (what every HTTP client does); a POST is reported as an error.
            if reused and retry_idempotent and raw.startswith(b"GET "):
                return await self.send(raw, timeout, retry_idempotent=False)
            raise
        except BaseException:
            conn.close()
            raise
        if close:
            conn.close()
        else:
            conn.used = time.monotonic()
            self.idle.append(conn)
        return status, body

    async def warm(self, n: int) -> None:
        conns = [await self._open() for _ in range(n)]
        for c in conns:
            c.used = time.monotonic()
        self.idle.extend(conns)

    def close(self) -> None:
        for c in self.idle:
            c.close()
        self.idle.clear()


# ------------------------------------------------------------------------------------ measuring

@dataclass
class Samples:
    """Latencies (seconds) and status codes of one request type."""

    name: str
    latency: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    lag: float = 0.0  # the scheduler's worst lateness (open loop), seconds
    started: float = 0.0
    ended: float = 0.0
    merged_span: float = 0.0  # seconds of the slices merged into this one
    at: list[float] = field(default_factory=list)  # when each request was due (loop clock)

    def add(self, status: int | str, seconds: float, at: float = 0.0) -> None:
        self.statuses[status] += 1
        self.latency.append(seconds)
        self.at.append(at)

    def intervals(self) -> list[tuple[float, float]]:
        return [(a, a + d) for a, d in zip(self.at, self.latency, strict=True)]

    def subset(self, keep) -> Samples:
        """The requests whose (due, done) interval satisfies keep(start, end)."""
        out = Samples(self.name)
        for a, d in zip(self.at, self.latency, strict=True):
            if keep(a, a + d):
                out.latency.append(d)
                out.at.append(a)
        return out

    def pct(self, q: float) -> float:
        if not self.latency:
            return float("nan")
        s = sorted(self.latency)
        k = (len(s) - 1) * q / 100
        lo = int(k)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (k - lo)

    @property
    def count(self) -> int:
        return sum(self.statuses.values())

    def span(self) -> float:
        return self.merged_span or max(self.ended - self.started, 0.0)

    def rate(self) -> float:
        span = self.span()
        return self.count / span if span > 0 else float("nan")

    def errors_5xx(self) -> int:
        return sum(n for s, n in self.statuses.items() if isinstance(s, int) and s >= 500)

    def failures(self) -> int:
        """Connection errors and timeouts (no HTTP status at all)."""
        return sum(n for s, n in self.statuses.items() if not isinstance(s, int))

    def merge(self, other: Samples) -> None:
        self.latency += other.latency
        self.at += other.at
        self.statuses.update(other.statuses)
        self.lag = max(self.lag, other.lag)
        self.merged_span = self.span() + other.span()


async def timed(client: RawHTTP, raw: bytes, samples: Samples, since: float, timeout: float = 60.0):
    """One request; its latency counts from `since` (when it was due). Returns (status, body)."""
    loop = asyncio.get_running_loop()
    try:
        status, body = await client.send(raw, timeout)
    except TimeoutError:
        samples.add("timeout", loop.time() - since, since)
        return None, b""
    except (OSError, asyncio.IncompleteReadError) as exc:
        samples.add(type(exc).__name__, loop.time() - since, since)
        return None, b""
    samples.add(status, loop.time() - since, since)
    return status, body


async def open_loop(rate: float, seconds: float, fire, samples: Samples, stop: asyncio.Event | None = None):
    """Call `fire(i, due)` (a coroutine function) `rate` times a second for `seconds`, not waiting
    for earlier calls to finish; then wait for the stragglers."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.02
    samples.started = start
    pending: set[asyncio.Task] = set()
    n = int(rate * seconds)
    for i in range(n):
        if stop is not None and stop.is_set():
            break
        due = start + i / rate
        wait = due - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        else:
            samples.lag = max(samples.lag, -wait)
        task = asyncio.create_task(fire(i, due))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending)
    samples.ended = loop.time()


def overlapping(intervals: list[tuple[float, float]]):
    """A predicate: does (start, end) overlap any of these intervals?"""
    import bisect

    merged: list[list[float]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    starts = [m[0] for m in merged]

    def keep(start: float, end: float) -> bool:
        i = bisect.bisect_right(starts, end) - 1  # the last interval starting before `end`
        return i >= 0 and merged[i][1] >= start

    return keep


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


# ------------------------------------------------------------------------------------ the service

class Service:
    """The real stack on a throwaway database; everything under `home`, removed by `stop()`."""

    def __init__(self, backend: str, *, tmp: str | None = None, outbox_root: str | None = None,
                 celery_concurrency: int = 2, env: dict | None = None, bare: bool = False):
        self.backend = backend
        self.home = Path(tempfile.mkdtemp(prefix=f"mab-load-{backend}-", dir=tmp))
        self.outbox = Path(tempfile.mkdtemp(prefix="mab-load-outbox-", dir=outbox_root))
        self.concurrency = celery_concurrency
        self.extra_env = env or {}
        self.want_bare = bare
        self.pg = None
        self.stack: Stack | None = None
        self.port = self.bare_port = None
        self.url = ""

    def start(self) -> Service:
        (self.home / "logs").mkdir()
        if self.backend == "postgresql":
            from tests.servers import PostgresServer

            self.pg = PostgresServer(self.home / "pg").start()
            self.pg.execute("CREATE DATABASE bench")
            self.url = self.pg.url("bench")
        else:
            self.url = f"sqlite:///{self.home / 'bench.db'}"
        self.stack = Stack(var_dir=self.home)
        redis_url = self.stack.start_redis()
        self.redis_url = redis_url
        self.port = free_port()
        env = {
            "MAB_DATABASE_URL": self.url, "MAB_REDIS_URL": redis_url, "MAB_VAR_DIR": str(self.home),
            "MAB_OUTBOX_DIR": str(self.outbox), "MAB_PUBLIC_BASE_URL": f"http://127.0.0.1:{self.port}",
            "MAB_DELIVERY_BACKEND": "outbox",
            # the load would otherwise be refused with 429 (the limits are per API key)
            "MAB_RATE_LIMIT_INGEST_PER_MINUTE": "0", "MAB_RATE_LIMIT_MUTATIONS_PER_MINUTE": "0",
            **self.extra_env,
        }
        self.stack.env.update(env)
        # This process builds the data through the services: same database, same broker. Its own
        # metrics go to a directory of their own (the API's /metrics must count only the stack).
        os.environ.update(env)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(self.home / "metrics-driver")
        from campaigns import db
        from campaigns.migrate import upgrade
        from campaigns.settings import get_settings

        get_settings.cache_clear()
        db.reset_engine()
        upgrade(self.url)
        self.stack.start_services("127.0.0.1", self.port, concurrency=self.concurrency)
        if self.want_bare:
            (self.home / "bare_app.py").write_text(BARE_APP)
            self.bare_port = free_port()
            # the same command line as Stack.start_services gives the API: only the app differs
            self.stack._spawn("bare", [sys.executable, "-m", "uvicorn", "bare_app:app", "--app-dir", str(self.home),
                                       "--host", "127.0.0.1", "--port", str(self.bare_port),
                                       *api_workers_option(self.stack.env)], "bare.log")
            import httpx

            wait_for(lambda: httpx.get(f"http://127.0.0.1:{self.bare_port}/docs", timeout=2).status_code == 200,
                     "the bare app", 60, self.stack.check_alive)
        return self

    def retries(self) -> dict[str, int]:
        """Celery task retries in the worker's log so far, by the exception that caused them."""
        import re

        found: Counter = Counter()
        log = self.home / "logs" / "worker.log"
        if log.exists():
            for line in log.read_text(errors="replace").splitlines():
                if "Retry in" in line:
                    m = re.search(r"Retry in [\d.]+s: (\w+)", line)
                    found[m.group(1) if m else "?"] += 1
                    if "deadlock" in line.lower():
                        found["(deadlock detected)"] += 1
        return dict(found)

    def stop(self, purge: bool = True, keep_logs: str | None = None) -> None:
        try:
            if self.stack:
                if purge:  # the run is over: tasks still queued would only delay the worker's shutdown
                    try:
                        import redis

                        redis.Redis.from_url(self.redis_url).delete("mab")
                    except Exception:  # noqa: S110 (Redis already gone: nothing to purge)
                        pass
                self.stack.stop()
        finally:
            if self.pg:
                self.pg.stop()
            from campaigns import db

            db.reset_engine()
            if keep_logs and (self.home / "logs").exists():
                target = Path(keep_logs) / self.home.name
                shutil.copytree(self.home / "logs", target, dirs_exist_ok=True)
                print(f"logs kept in {target}")
            shutil.rmtree(self.home, ignore_errors=True)
            shutil.rmtree(self.outbox, ignore_errors=True)

    def queue_depth(self) -> tuple[int, int, int]:
        """(tasks waiting in the `mab` list, tasks taken but not acknowledged, clicks not yet folded)."""
        import redis

        from campaigns.services.clicks import STREAM

        r = redis.Redis.from_url(self.redis_url)
        return r.llen("mab"), r.hlen("unacked"), r.xlen(STREAM)

    def metrics_text(self) -> str:
        import httpx

        return httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=30).text


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (Prometheus text format)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


# ------------------------------------------------------------------------------------ data

def import_customers(n: int, prefix: str = "c", segments: list[str] = SEGMENTS, batch: int = 50_000) -> None:
    """n customers spread evenly over `segments`, through the service (one transaction per batch)."""
    from campaigns.db import session_scope
    from campaigns.schemas import CustomerIn
    from campaigns.services import customers

    for start in range(0, n, batch):
        rows = ((f"customers[{i}]", CustomerIn(external_id=f"{prefix}{i}", email=f"{prefix}{i}@example.com",
                                               segment=segments[i % len(segments)],
                                               attributes={"first_name": f"N{i}"}))
                for i in range(start, min(n, start + batch)))
        with session_scope() as s:
            customers.import_customers(s, rows)


def create_campaign(name: str, segments: list[str], landing_url: str = "https://restaurant.example.com/order") -> int:
    """The demo campaign's grid (4 x 5 x 10 = 200 variants), 10% holdout, started."""
    from campaigns.db import session_scope
    from campaigns.demo import demo_campaign
    from campaigns.schemas import CampaignCreate
    from campaigns.services import campaigns

    payload = {**demo_campaign(), "name": name, "segments": segments, "exclusions": [], "landing_url": landing_url,
               "burn_in_min_sends": 0}
    with session_scope() as s:
        cid = campaigns.create(s, CampaignCreate(**payload)).id
    with session_scope() as s:
        campaigns.transition(s, cid, "start")
    return cid


def start_period(campaign_id: int) -> int:
    """A period through the service: it is handed to the real Celery worker after the commit."""
    from campaigns.db import session_scope
    from campaigns.services import periods

    with session_scope() as s:
        return periods.start_period(s, campaign_id).id


def wait_period(period_id: int, timeout: float) -> dict:
    from campaigns.db import session_scope
    from campaigns.models import SendPeriod

    deadline = time.monotonic() + timeout
    while True:
        with session_scope() as s:
            p = s.get(SendPeriod, period_id)
            row = {"status": p.status, "total": p.total, "sent": p.sent, "failed": p.failed, "error": p.error}
        if row["status"] in ("completed", "failed") or time.monotonic() > deadline:
            return row
        time.sleep(0.5)


def create_keys() -> dict[str, str]:
    from campaigns.db import session_scope
    from campaigns.services import keys

    out = {}
    with session_scope() as s:
        for role in ("admin", "marketer", "analyst", "ingest"):
            out[role] = keys.create_key(s, f"load {role}", role)[1]
    return out


def scalar(sql: str, **params):
    from sqlalchemy import text

    from campaigns.db import session_scope

    with session_scope() as s:
        return s.execute(text(sql), params).scalar()


def sent_ids(period_id: int) -> list[int]:
    from sqlalchemy import text

    from campaigns.db import session_scope

    with session_scope() as s:
        return list(s.execute(text("SELECT id FROM send WHERE period_id = :p AND status = 'sent' ORDER BY id"),
                              {"p": period_id}).scalars())


def check_click_token(outbox: Path, campaign_id: int, send_id: int) -> bool:
    """The tokens the load generator signs are those of the real emails (one email read back)."""
    import email
    import email.policy

    from campaigns import signing

    eml = next(outbox.glob(f"campaign-{campaign_id}/period-*/**/{send_id}.eml"), None)
    if eml is None:
        return False
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    text = msg.get_body(("plain",)).get_content()  # quoted-printable decoded
    return f"/t/{signing.sign_click(0, send_id, campaign_id)}" in text
