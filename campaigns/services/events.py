"""Feedback events: checked at the edge, queued through Redis, folded in by workers exactly once.

Exactly once comes from the database, not from the queue: each event id is inserted with
ON CONFLICT DO NOTHING, and only the rows that were new touch the send ledger, in the same
transaction. A worker dying mid-batch rolls the transaction back; the task is redelivered
(acks_late) and the rerun finds the same events new.

Nothing is dropped: an event whose send or campaign is unknown, or whose conversion matches no send
within the attribution window, is stored as `unattributed`; a click judged to be a scanner's or a
bot's is stored as `excluded` with its reason. Only `applied` clicks and conversions are rewards.
"""

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from pydantic import ValidationError
from sqlmodel import Session

from campaigns import jobs, metrics
from campaigns.db import on_commit
from campaigns.errors import InvalidInput, Unavailable
from campaigns.models import EventStatus, EventType, as_utc, utcnow
from campaigns.repositories import campaigns as campaign_repo
from campaigns.repositories import events as repo
from campaigns.schemas import EventIn
from campaigns.services.customers import CsvRows
from campaigns.settings import get_settings

ENQUEUE_BATCH = 5_000  # events per process_events task when a big import is queued
BOT_FAST, BOT_USER_AGENT, BOT_BURST = "bot:fast", "bot:user_agent", "bot:burst"


def validate_events(events: list[EventIn]) -> None:
    """Refuse the whole batch when any event is malformed. An event naming a send or a campaign that
    does not exist is not malformed: the worker stores it as unattributed, and it is counted."""
    seen: set[str] = set()
    for i, e in enumerate(events):
        if e.event_id in seen:
            raise InvalidInput(f"events[{i}].event_id", f"'{e.event_id}' appears twice in this batch")
        seen.add(e.event_id)
        if e.type == EventType.COMPLAINT:
            if e.send_id is None:
                raise InvalidInput(f"events[{i}].send_id", "a complaint names the send_id it is about")
            if e.revenue:
                raise InvalidInput(f"events[{i}].revenue", "a complaint carries no revenue")
        elif e.send_id is None and (e.campaign_id is None or e.customer_external_id is None):
            raise InvalidInput(f"events[{i}]", "give send_id, or campaign_id and customer_external_id")
        if e.type == EventType.CLICK and e.revenue:
            raise InvalidInput(f"events[{i}].revenue", "a click carries no revenue")


def enqueue(events: list[EventIn]) -> int:
    return enqueue_payload([e.model_dump(mode="json") for e in events])


def enqueue_payload(payload: list[dict]) -> int:
    try:
        jobs.send(jobs.PROCESS_EVENTS, payload)
    except jobs.BrokerUnavailable as exc:  # the caller must retry: nothing was accepted
        raise Unavailable(f"the event queue is unavailable, retry later ({str(exc).split(':')[0]})") from exc
    metrics.observe_events_received(payload)
    return len(payload)


CSV_COLUMNS = ("event_id", "campaign_id", "customer_external_id", "revenue", "occurred_at")


def conversion_csv_rows(lines: Iterable[str]) -> Iterator[tuple[str, EventIn]]:
    """Offline conversions from a CSV stream, parsed lazily: every column of CSV_COLUMNS is required
    on every row (other columns are ignored). The header is line 1; a bad row is named by its line."""
    reader = CsvRows(lines)
    if reader.fieldnames is None:
        raise InvalidInput("body", "the CSV is empty (expected a header line)")
    missing = [c for c in CSV_COLUMNS if c not in reader.fieldnames]
    if missing:
        raise InvalidInput("line 1", f"missing column(s): {', '.join(missing)} (expected {','.join(CSV_COLUMNS)})")
    for where, row in reader:
        if None in row:
            raise InvalidInput(where, "more fields than header columns")
        for column in CSV_COLUMNS:
            if not (row[column] or "").strip():
                raise InvalidInput(f"{where}.{column}", "missing value")
        try:
            yield where, EventIn(type="conversion", **{c: row[c].strip() for c in CSV_COLUMNS})
        except ValidationError as exc:
            err = exc.errors()[0]
            raise InvalidInput(f"{where}.{'.'.join(str(p) for p in err['loc'])}", err["msg"]) from None


def import_conversions_csv(session: Session, open_lines: Callable[[], Iterable[str]]) -> int:
    """Check a whole conversion CSV, then queue it in batches. `open_lines` reads the spooled upload
    from its start; it is read twice, so memory stays flat whatever the size.

    A bad row (missing value, negative or non-finite revenue, bad date, unknown campaign, past the row
    cap) refuses the whole file with its line number and queues nothing: an offline file is one
    export, and a partial import would leave the sender guessing which rows to send again. Once it
    is valid, sending it again is harmless: event ids count once."""
    cap = get_settings().max_conversion_rows_per_request
    known: set[int] = set()
    rows = 0
    for where, e in conversion_csv_rows(open_lines()):
        rows += 1
        if rows > cap:
            raise InvalidInput(where, f"too many rows in one request (cap {cap}, MAB_MAX_CONVERSION_ROWS_PER_REQUEST)")
        if e.campaign_id not in known:
            if not repo.existing_campaign_ids(session, {e.campaign_id}):
                raise InvalidInput(f"{where}.campaign_id", f"no campaign with id {e.campaign_id}")
            known.add(e.campaign_id)
    if not rows:
        raise InvalidInput("body", "the CSV has a header but no rows")
    batch: list[dict] = []
    for _, e in conversion_csv_rows(open_lines()):
        batch.append(e.model_dump(mode="json"))
        if len(batch) == ENQUEUE_BATCH:
            enqueue_payload(batch)
            batch = []
    if batch:
        enqueue_payload(batch)
    return rows


@lru_cache(maxsize=8)
def _agent_pattern(fragments: str) -> re.Pattern | None:
    """One case-insensitive alternation of the configured user-agent fragments (None: rule off)."""
    parts = [re.escape(a.strip()) for a in fragments.split(",") if a.strip()]
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


@dataclass(frozen=True)
class BotRules:
    min_seconds: float
    agents: re.Pattern | None
    burst_links: int
    burst_seconds: float

    @classmethod
    def from_settings(cls) -> "BotRules":
        s = get_settings()
        return cls(s.bot_min_seconds_after_send, _agent_pattern(s.bot_user_agents), s.bot_burst_links,
                   s.bot_burst_seconds)

    def reason(self, user_agent: str | None, occurred: datetime, sent_at: datetime | None) -> str | None:
        """Why a click is not a person's, judged on the click alone (bursts need the send's history)."""
        if user_agent and self.agents is not None and self.agents.search(user_agent):
            return BOT_USER_AGENT
        # a click before delivery (clock skew) counts as fast too: no person reads a mail that early
        if self.min_seconds and sent_at is not None and (occurred - sent_at).total_seconds() < self.min_seconds:
            return BOT_FAST
        return None


def burst_members(clicks: list[tuple[str, datetime, int]], links: int, seconds: float) -> set[str]:
    """Keys of the clicks that belong to a burst: any span of `seconds` whose clicks cover at least
    `links` distinct links. `clicks` are (key, occurred_at, link) of one send. Two pointers, O(n log n)."""
    if links < 1 or len(clicks) < links:
        return set()
    clicks = sorted(clicks, key=lambda c: (c[1], c[0]))
    window: Counter = Counter()
    out: set[str] = set()
    end = marked_to = 0
    for start, (_, t0, _) in enumerate(clicks):
        while end < len(clicks) and (clicks[end][1] - t0).total_seconds() <= seconds:
            window[clicks[end][2]] += 1
            end += 1
        if len(window) >= links:
            out.update(c[0] for c in clicks[max(start, marked_to):end])
            marked_to = end
        window[clicks[start][2]] -= 1
        if not window[clicks[start][2]]:
            del window[clicks[start][2]]
    return out


def _attribute(session: Session, events: list[dict], now: datetime) -> tuple[list[dict], dict[int, datetime]]:
    """Resolve every event to the send it rewards. A conversion named by customer + campaign goes to
    that customer's most recent send of the campaign within the attribution window. An unknown send
    or campaign leaves the event unattributed (campaign_id NULL when the campaign does not exist)."""
    by_send = repo.sends_by_id(session, {e["send_id"] for e in events if e.get("send_id")})
    known_campaigns = repo.existing_campaign_ids(session, {e["campaign_id"] for e in events if e.get("campaign_id")})
    pairs = {(e["customer_external_id"], e["campaign_id"]) for e in events
             if not e.get("send_id") and e.get("campaign_id") in known_campaigns}
    history = defaultdict(list)
    for r in repo.sends_of_customers(session, pairs):
        history[(r.external_id, r.campaign_id)].append(r)  # newest first
    sent_at: dict[int, datetime] = {}
    windows = {}
    rows = []
    for e in events:
        occurred = e["occurred_at"] or now
        send_id, campaign_id = e.get("send_id"), e.get("campaign_id")
        if campaign_id not in known_campaigns:
            campaign_id = None
        if send_id:
            send = by_send.get(send_id)
            if send is None:
                send_id = None
            else:
                campaign_id = send.campaign_id
                sent_at[send.id] = send.sent_at
        elif campaign_id is not None:
            if campaign_id not in windows:
                c = campaign_repo.get_campaign(session, campaign_id)
                windows[campaign_id] = timedelta(days=c.attribution_window_days)
            candidates = [
                r for r in history[(e["customer_external_id"], campaign_id)]
                if r.sent_at is not None and r.sent_at <= occurred <= r.sent_at + windows[campaign_id]
            ]
            if candidates:
                send_id = candidates[0].id
                sent_at[send_id] = candidates[0].sent_at
        rows.append(
            {
                "event_id": e["event_id"],
                "type": e["type"],
                "status": EventStatus.APPLIED if send_id else EventStatus.UNATTRIBUTED,
                "campaign_id": campaign_id,
                "send_id": send_id,
                "customer_external_id": e.get("customer_external_id"),
                "revenue": float(e.get("revenue") or 0.0),
                "occurred_at": occurred,
                "received_at": now,
                "reason": None,
                "user_agent": e.get("user_agent"),
                "link": e.get("link"),
            }
        )
    return rows, sent_at


def _exclude_bursts(session: Session, new_rows: list[dict], rules: BotRules) -> Counter:
    """Mark every click of a burst excluded, the new ones and the ones stored before. Returns, per
    send, how many clicks already folded into the ledger turned out to be part of a burst.

    The send rows are locked first, so the history read next holds every click of the send another
    worker committed: a burst split over two batches (or two workers) is still one burst."""
    if rules.burst_links < 1:
        return Counter()
    sends = sorted({r["send_id"] for r in new_rows
                    if r["type"] == EventType.CLICK and r["send_id"] and r["link"] is not None})
    if not sends:
        return Counter()
    repo.lock_sends(session, sends)
    by_send = defaultdict(list)
    for c in repo.clicks_of_sends(session, repo.sends_with_links_clicked(session, sends, rules.burst_links)):
        by_send[c.send_id].append(c)
    new = {r["event_id"]: r for r in new_rows}
    folded_before: Counter = Counter()
    to_exclude = []
    for send_id, clicks in by_send.items():
        members = burst_members([(c.event_id, as_utc(c.occurred_at), c.link) for c in clicks],
                                rules.burst_links, rules.burst_seconds)
        for c in clicks:
            if c.event_id not in members or c.status != EventStatus.APPLIED:
                continue  # an excluded click keeps its first reason
            to_exclude.append(c.event_id)
            if c.event_id in new:
                new[c.event_id].update(status=EventStatus.EXCLUDED, reason=BOT_BURST)
            else:
                folded_before[send_id] += 1
    repo.mark_excluded(session, to_exclude, BOT_BURST)
    return folded_before


def _fold(session: Session, new_rows: list[dict], folded_before: Counter) -> None:
    """Add the new applied clicks and conversions to the ledger; take back burst clicks counted before."""
    clicks: dict[int, dict] = {}
    conversions: dict[int, dict] = {}
    for r in new_rows:
        if r["status"] != EventStatus.APPLIED or r["type"] not in (EventType.CLICK, EventType.CONVERSION):
            continue
        target = clicks if r["type"] == EventType.CLICK else conversions
        agg = target.setdefault(r["send_id"], {"sid": r["send_id"], "n": 0, "rev": 0.0, "at": r["occurred_at"]})
        agg["n"] += 1
        agg["rev"] += r["revenue"]
        agg["at"] = min(agg["at"], r["occurred_at"])
    repo.apply_clicks(session, [{"sid": a["sid"], "n": a["n"], "at": a["at"]}
                                for a in clicks.values() if a["sid"] not in folded_before])
    repo.rebase_clicks(session, [{"sid": sid, "n": clicks.get(sid, {"n": 0})["n"] - k}
                                 for sid, k in folded_before.items()])
    repo.apply_conversions(session, list(conversions.values()))


def process_events(session: Session, events: list[dict]) -> dict:
    """Worker: store new events, exclude bot clicks, fold the applied ones into the send ledger."""
    now = utcnow()
    unique: dict[str, dict] = {}
    for e in events:  # a repeated id inside one batch counts once, like across batches
        unique.setdefault(e["event_id"], e)
    for e in unique.values():
        if e.get("occurred_at") and isinstance(e["occurred_at"], str):
            e["occurred_at"] = as_utc(datetime.fromisoformat(e["occurred_at"]))
    # Only a click that says when it happened can be judged fast; without occurred_at its time is
    # this worker's clock, which says nothing about the click (the tracking link always sends it).
    timed = {e["event_id"] for e in unique.values() if e.get("occurred_at")}
    rows, sent_at = _attribute(session, list(unique.values()), now)
    rules = BotRules.from_settings()
    for r in rows:
        if r["type"] == EventType.CLICK and r["status"] == EventStatus.APPLIED:
            sent = sent_at.get(r["send_id"]) if r["event_id"] in timed else None
            reason = rules.reason(r["user_agent"], r["occurred_at"], sent)
            if reason:
                r.update(status=EventStatus.EXCLUDED, reason=reason)
    new_ids = repo.insert_new_events(session, rows)
    new_rows = [r for r in rows if r["event_id"] in new_ids]
    # Every send this batch may update, locked in id order before any UPDATE: the updates below run
    # in batch order, so without it two workers with overlapping batches could deadlock (PostgreSQL).
    repo.lock_sends(session, list({r["send_id"] for r in new_rows
                                   if r["send_id"] and r["type"] in (EventType.CLICK, EventType.CONVERSION)}))
    _fold(session, new_rows, _exclude_bursts(session, new_rows, rules))
    on_commit(session, lambda: metrics.observe_events_folded(events, new_rows))  # counted once it holds
    status = Counter(r["status"] for r in new_rows)
    return {
        "received": len(events),
        "new": len(new_rows),
        "applied": status[EventStatus.APPLIED],
        "excluded": status[EventStatus.EXCLUDED],
        "duplicates": len(events) - len(new_rows),
    }


def feedback_counts(session: Session, campaign_id: int | None) -> dict:
    """One campaign's stored events by type and status, and the excluded ones by reason.
    campaign_id None: the events that named no known campaign (stored unattributed, campaign NULL)."""
    statuses = [s.value for s in EventStatus]
    out = {
        **{s: 0 for s in statuses},
        "by_type": {t.value: {s: 0 for s in statuses} for t in EventType},
        "excluded_by_reason": {BOT_FAST: 0, BOT_USER_AGENT: 0, BOT_BURST: 0},
    }
    for type_, status, reason, n in repo.feedback_counts(session, campaign_id):
        out[status] = out.get(status, 0) + n
        out["by_type"].setdefault(type_, {s: 0 for s in statuses})
        out["by_type"][type_][status] = out["by_type"][type_].get(status, 0) + n
        if status == EventStatus.EXCLUDED:
            key = reason or "unknown"
            out["excluded_by_reason"][key] = out["excluded_by_reason"].get(key, 0) + n
    return out
