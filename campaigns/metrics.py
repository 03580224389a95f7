"""Prometheus metrics: definitions, the small `observe_*` functions the code calls, and the scrape.

The API runs under uvicorn (maybe several worker processes) and Celery runs prefork children: each
process counts into its own memory-mapped file under PROMETHEUS_MULTIPROC_DIR (prometheus_client's
multiprocess mode), and GET /metrics on any API process sums the files of every process on the host,
the workers' included. The directory must be chosen before prometheus_client is imported, hence the
code above the import. Unset, it defaults to `<MAB_VAR_DIR>/metrics`; `mab up` empties it at start.

Two families are not counted but read at scrape time, so they are true whichever process answers:
queue depth (Redis list lengths) and allocation entropy (the newest snapshots, from the database).
"""

import logging
import math
import os
import time
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from campaigns.settings import get_settings

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"


def _multiprocess_dir() -> Path | None:
    path = os.environ.get(ENV) or os.environ.get(ENV.lower())
    if not path:
        path = str((get_settings().var_dir / "metrics").resolve())
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a read-only tree: count in this process only rather than fail to start
        log.warning("metrics directory %s unusable (%s): single-process metrics", path, exc)
        os.environ.pop(ENV, None)
        return None
    os.environ[ENV] = path
    return Path(path)


MULTIPROCESS_DIR = _multiprocess_dir()

import prometheus_client as prom  # noqa: E402 (the directory above must be set first)
from prometheus_client import CollectorRegistry, generate_latest, multiprocess, values  # noqa: E402
from prometheus_client.core import GaugeMetricFamily  # noqa: E402

QUEUE = "mab"  # worker/app.py task_default_queue
PRIORITY_SEPARATOR = "\x06\x16"  # kombu's Redis transport keeps priorities 3, 6, 9 in sibling lists
PRIORITY_STEPS = (3, 6, 9)

SENDS = prom.Counter("mab_sends_total", "Send outcomes recorded by delivery.", ["outcome", "backend"])
EVENTS_RECEIVED = prom.Counter(
    "mab_events_received_total", "Feedback events accepted at the edge (queued for a worker).", ["type"]
)
EVENTS_PROCESSED = prom.Counter(
    "mab_events_processed_total",
    "Feedback events folded by a worker: applied, unattributed, excluded (bot) or duplicate.",
    ["type", "status"],
)
TASK_SECONDS = prom.Histogram(
    "mab_task_duration_seconds", "Celery task run time.", ["task"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
TASKS = prom.Counter("mab_tasks_total", "Celery task runs by final state (SUCCESS, RETRY, FAILURE).", ["task", "state"])
HTTP_SECONDS = prom.Histogram(
    "mab_http_request_duration_seconds", "API request latency by route template.", ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
HTTP_REQUESTS = prom.Counter("mab_http_requests_total", "API requests.", ["method", "route", "status"])
GUARD_PAUSES = prom.Counter("mab_guard_pauses_total", "Campaigns the guard paused, by the rule that tripped.", ["rule"])
SEND_FAILURES = prom.Counter(
    "mab_send_failures_total",
    "Failed sends by kind of reason (render: the template failed for the customer, with the error's type; "
    "delivery: the server refused it; suppressed: the customer was suppressed by send time).",
    ["kind"],
)
PERIOD_HALTS = prom.Counter(
    "mab_period_halts_total", "Periods halted (campaign paused) because their failure share passed the threshold."
)
DISPATCH_FAILURES = prom.Counter(
    "mab_dispatch_failures_total", "Tasks that could not be handed to the broker (the sweeper dispatches again).",
    ["task"],
)
REDISPATCHED = prom.Counter(
    "mab_redispatched_total", "Work the sweeper handed out again after its task was lost (period plans, chunks).",
    ["kind"],
)
WINDOW_RELEASES = prom.Counter(
    "mab_window_releases_total", "Chunks the sweeper handed out when their send window opened.")
TIMEZONE_FALLBACKS = prom.Counter(
    "mab_timezone_fallbacks_total", "Customers whose time zone attribute was unknown: sent in the campaign's.")
BOUNCES = prom.Counter(
    "mab_bounces_total", "Customers suppressed by a bounce or complaint, by source (smtp, mail) and kind "
    "(hard, soft, complaint).", ["source", "kind"],
)
INBOUND = prom.Counter(
    "mab_inbound_messages_total", "Inbound bounce and complaint reports by outcome (recorded, unmatched, "
    "unparseable, ignored).", ["outcome"],
)

SMTP_DEFERRALS = prom.Counter(
    "mab_smtp_deferrals_total", "SMTP deferrals (421, 4.7.x) by recipient domain group; each backs the group off.",
    ["group"],
)
SMTP_BACKOFF = prom.Counter(
    "mab_smtp_backoff_seconds_total", "Back-off imposed on a recipient domain group after deferrals, in seconds.",
    ["group"],
)
SMTP_PACED = prom.Counter(
    "mab_smtp_paced_total", "Messages held back (left queued) because their domain group was over its rate.",
    ["group"],
)
SMTP_CONNECTION_WAITS = prom.Counter(
    "mab_smtp_connection_waits_total", "Times a recipient domain group's mail waited because all of its SMTP "
    "connection slots were taken.", ["group"],
)


# --- what the code calls ----------------------------------------------------------------------------


def observe_sends(sent: int, failed: int, suppressed: int, backend: str) -> None:
    for outcome, n in (("sent", sent), ("failed", failed), ("suppressed", suppressed)):
        if n:
            SENDS.labels(outcome, backend).inc(n)


def observe_deferral(group: str, backoff_seconds: float) -> None:
    SMTP_DEFERRALS.labels(group).inc()
    SMTP_BACKOFF.labels(group).inc(backoff_seconds)


def observe_pacing_wait(group: str) -> None:
    SMTP_PACED.labels(group).inc()


def observe_connection_wait(group: str) -> None:
    SMTP_CONNECTION_WAITS.labels(group).inc()


def observe_send_results(results: Iterable[dict], backend: str) -> None:
    """One committed delivery batch (`sending._record`): dicts with new_status and err."""
    sent = failed = suppressed = 0
    kinds: Counter = Counter()
    for r in results:
        if r["new_status"] == "sent":
            sent += 1
            continue
        kind = failure_kind(r.get("err"))
        kinds[kind] += 1
        if kind == "suppressed":
            suppressed += 1
        else:
            failed += 1
    observe_sends(sent, failed, suppressed, backend)
    for kind, n in kinds.items():
        SEND_FAILURES.labels(kind).inc(n)


def failure_kind(error: str | None) -> str:
    """A failure's reason as a label of bounded cardinality: `render:<error type>`, `suppressed`,
    `delivery` (the full reason is on the send and in the period's summary)."""
    error = error or ""
    if error.startswith("suppressed:"):
        return "suppressed"
    if error.startswith("render failed: "):
        kind = error[len("render failed: "):].split(":", 1)[0]
        return f"render:{kind[:40]}" if kind.isidentifier() else "render"
    return "delivery"


def observe_period_halt() -> None:
    PERIOD_HALTS.inc()


def observe_dispatch_failure(task: str) -> None:
    DISPATCH_FAILURES.labels(task.rsplit(".", 1)[-1]).inc()


def count_bounces(source: str, kind: str, n: int) -> None:
    if n:
        BOUNCES.labels(source, kind).inc(n)


def count_inbound(outcome: str) -> None:
    INBOUND.labels(outcome).inc()


def observe_window_release(n: int) -> None:
    if n:
        WINDOW_RELEASES.inc(n)


def observe_timezone_fallbacks(n: int) -> None:
    if n:
        TIMEZONE_FALLBACKS.inc(n)


def observe_redispatch(kind: str, n: int = 1) -> None:
    if n:
        REDISPATCHED.labels(kind).inc(n)


def _type_of(event) -> str:
    value = event.get("type") if isinstance(event, dict) else getattr(event, "type", None)
    return str(getattr(value, "value", value) or "unknown")


def observe_events_received(events: Iterable) -> None:
    """Events accepted at the edge (`events.enqueue_payload`, which every route goes through, and
    the click redirect, `tracking.click`): EventIn models or dicts with a `type`."""
    for type_, n in Counter(_type_of(e) for e in events).items():
        EVENTS_RECEIVED.labels(type_).inc(n)


def observe_events_folded(events: list[dict], new_rows: list[dict]) -> None:
    """A worker's batch: `events` as received, `new_rows` the stored ones with their status. What
    was received but not new is a duplicate (of an earlier delivery or within the batch)."""
    stored = Counter((_type_of(r), str(r["status"])) for r in new_rows)
    for (type_, status), n in stored.items():
        EVENTS_PROCESSED.labels(type_, status).inc(n)
    duplicates = Counter(_type_of(e) for e in events)
    duplicates.subtract(Counter(type_ for type_, _ in stored.elements()))
    for type_, n in duplicates.items():
        if n > 0:
            EVENTS_PROCESSED.labels(type_, "duplicate").inc(n)


def observe_task(task: str, state: str, seconds: float | None) -> None:
    TASKS.labels(task, state).inc()
    if seconds is not None:
        TASK_SECONDS.labels(task).observe(seconds)


def observe_http(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_SECONDS.labels(method, route).observe(seconds)


def observe_guard_pause(rule: str) -> None:
    GUARD_PAUSES.labels(rule).inc()


# --- read at scrape time ------------------------------------------------------------------------------


def entropy_bits(weights: Iterable[float]) -> float:
    """Shannon entropy of an allocation, in bits: log2(arms) when uniform, 0 when one arm has it all."""
    return float(-sum(w * math.log2(w) for w in weights if w > 0))


def broker_url() -> str:
    return get_settings().broker_url()


@lru_cache(maxsize=4)
def redis_client(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def queue_depth(client, queue: str = QUEUE) -> tuple[int, int, int]:
    """(messages waiting in the queue, messages delivered to a worker but not yet acknowledged,
    clicks in the click stream not yet folded)."""
    from campaigns.services.clicks import STREAM  # late: the services import this module

    keys = [queue, *(f"{queue}{PRIORITY_SEPARATOR}{p}" for p in PRIORITY_STEPS)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.llen(key)
    pipe.hlen("unacked")
    pipe.xlen(STREAM)
    *lengths, unacked, clicks = pipe.execute()
    return sum(lengths), unacked, clicks


def _queue_families(up: dict) -> list:
    waiting = GaugeMetricFamily("mab_queue_messages", "Tasks waiting in the Celery queue (Redis); clicks waiting "
                                "to be folded (queue=\"clicks\", the click stream).", labels=["queue"])
    unacked = GaugeMetricFamily("mab_queue_unacked_messages",
                                "Tasks a worker has taken and not yet acknowledged (running or prefetched).")
    try:
        n, u, c = queue_depth(redis_client(broker_url()))
    except Exception as exc:
        log.warning("metrics: queue depth unreadable: %s", type(exc).__name__)
        up["queue"] = False
        return []
    waiting.add_metric([QUEUE], n)
    waiting.add_metric(["clicks"], c)
    unacked.add_metric([], u)
    up["queue"] = True
    return [waiting, unacked]


def _database_families(up: dict) -> list:
    from campaigns.db import session_scope
    from campaigns.repositories import metrics as repo

    labels = ["campaign_id", "segment"]
    entropy = GaugeMetricFamily(
        "mab_allocation_entropy_bits",
        "Shannon entropy (bits) of the newest allocation of each segment of active and paused campaigns.",
        labels=labels)
    arms = GaugeMetricFamily("mab_allocation_arms", "Arms in that allocation (log2 of it: the uniform entropy).",
                             labels=labels)
    campaigns = GaugeMetricFamily("mab_campaigns", "Campaigns by status.", labels=["status"])
    periods = GaugeMetricFamily(
        "mab_periods_in_flight", "Periods queued or running, by state (queued, planning, sending, paused, stalled): "
        "a stalled period has not moved for longer than a chunk lease.", labels=["state"])
    try:
        with session_scope() as session:
            rows = repo.latest_weights(session)
            by_status = repo.campaigns_by_status(session)
            by_state = _period_states(session)
    except Exception as exc:
        log.warning("metrics: database unreadable: %s", type(exc).__name__)
        up["database"] = False
        return []
    for campaign_id, segment, weights in rows:
        entropy.add_metric([str(campaign_id), segment], entropy_bits(weights))
        arms.add_metric([str(campaign_id), segment], len(weights))
    for status in ("draft", "active", "paused", "completed"):
        campaigns.add_metric([status], by_status.get(status, 0))
    for state in ("queued", "planning", "sending", "paused", "stalled"):
        periods.add_metric([state], by_state.get(state, 0))
    up["database"] = True
    return [entropy, arms, campaigns, periods]


def _period_states(session) -> Counter:
    """In-flight periods by the state their API resource shows (services/periods.py `public`)."""
    from campaigns.repositories import campaigns as campaign_repo
    from campaigns.services import periods  # late: the services import this module

    return Counter(periods.public(session, p)["state"] for p in campaign_repo.in_flight_periods(session))


class LiveCollector:
    """The families read at scrape time. A source that cannot be read is reported, never fatal."""

    def collect(self):
        started = time.perf_counter()
        up: dict[str, bool] = {}
        yield from _queue_families(up)
        yield from _database_families(up)
        g = GaugeMetricFamily("mab_scrape_source_up", "1 if the scrape could read the source.", labels=["source"])
        for source, ok in up.items():
            g.add_metric([source], 1.0 if ok else 0.0)
        yield g
        took = GaugeMetricFamily("mab_scrape_duration_seconds", "Time the scrape-time families took.")
        took.add_metric([], time.perf_counter() - started)
        yield took


def _process_registry() -> CollectorRegistry:
    """What every process counted: the files of all processes, or this one's values when the
    multiprocess directory could not be set before prometheus_client was imported."""
    if getattr(values.ValueClass, "_multiprocess", False) and MULTIPROCESS_DIR is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(MULTIPROCESS_DIR))
        return registry
    return prom.REGISTRY


def render(*, live: bool = True) -> tuple[bytes, str]:
    """The exposition text. `live`: add the scrape-time families (queue depth, database)."""
    text = generate_latest(_process_registry())
    if live:
        extra = CollectorRegistry()
        extra.register(LiveCollector())
        text += generate_latest(extra)
    return text, prom.CONTENT_TYPE_LATEST


def clear_directory(path: Path) -> int:
    """Delete the per-process files of an earlier run (`mab up` does it before starting anything).
    Counters restart at zero, which Prometheus reads as a restart."""
    removed = 0
    if path.is_dir():
        for f in path.glob("*.db"):
            f.unlink(missing_ok=True)
            removed += 1
    return removed


def serve_worker_metrics(port: int) -> None:
    """A Celery worker on a host without an API process exposes its own processes' files here."""
    from prometheus_client import start_http_server

    start_http_server(port, registry=_process_registry())
