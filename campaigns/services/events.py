"""Feedback events: checked at the edge, queued through Redis, folded in by workers exactly once.

Exactly once comes from the database, not from the queue: each event id is inserted with
ON CONFLICT DO NOTHING, and only the rows that were new touch the send ledger, in the same
transaction. A worker dying mid-batch rolls the transaction back; the task is redelivered
(acks_late) and the rerun finds the same events new.
"""

from collections import defaultdict
from datetime import timedelta

from sqlmodel import Session

from campaigns.errors import InvalidInput, Unavailable
from campaigns.models import EventStatus, EventType, as_utc, utcnow
from campaigns.repositories import campaigns as campaign_repo
from campaigns.repositories import events as repo
from campaigns.schemas import EventIn


def validate_events(session: Session, events: list[EventIn]) -> None:
    """Refuse the whole batch when any event is malformed or points at something that does not exist."""
    send_ids = {e.send_id for e in events if e.send_id is not None}
    campaign_ids = {e.campaign_id for e in events if e.campaign_id is not None}
    known_sends = repo.existing_send_ids(session, send_ids)
    known_campaigns = repo.existing_campaign_ids(session, campaign_ids)
    seen: set[str] = set()
    for i, e in enumerate(events):
        if e.event_id in seen:
            raise InvalidInput(f"events[{i}].event_id", f"'{e.event_id}' appears twice in this batch")
        seen.add(e.event_id)
        if e.send_id is None and (e.campaign_id is None or e.customer_external_id is None):
            raise InvalidInput(f"events[{i}]", "give send_id, or campaign_id and customer_external_id")
        if e.send_id is not None and e.send_id not in known_sends:
            raise InvalidInput(f"events[{i}].send_id", f"no send with id {e.send_id}")
        if e.campaign_id is not None and e.campaign_id not in known_campaigns:
            raise InvalidInput(f"events[{i}].campaign_id", f"no campaign with id {e.campaign_id}")
        if e.type == EventType.CLICK and e.revenue:
            raise InvalidInput(f"events[{i}].revenue", "a click carries no revenue")


def enqueue(events: list[EventIn]) -> int:
    from worker.tasks import process_events  # late import: the worker imports services

    payload = [e.model_dump(mode="json") for e in events]
    try:
        process_events.delay(payload)
    except Exception as exc:  # broker down: the caller must retry, nothing was accepted
        raise Unavailable(f"the event queue is unavailable, retry later ({type(exc).__name__})") from exc
    return len(payload)


def _attribute(session: Session, events: list[dict], now) -> list[dict]:
    """Resolve every event to the send it rewards. A conversion named by customer + campaign goes to
    that customer's most recent send of the campaign within the attribution window."""
    by_send = repo.sends_by_id(session, {e["send_id"] for e in events if e.get("send_id")})
    pairs = {(e["customer_external_id"], e["campaign_id"]) for e in events if not e.get("send_id")}
    history = defaultdict(list)
    for r in repo.sends_of_customers(session, pairs):
        history[(r.external_id, r.campaign_id)].append(r)  # newest first
    windows = {}
    rows = []
    for e in events:
        occurred = e["occurred_at"] or now
        send_id, campaign_id = e.get("send_id"), e.get("campaign_id")
        if send_id:
            send = by_send.get(send_id)
            campaign_id = send.campaign_id if send else campaign_id
            if send is None:
                send_id = None
        else:
            if campaign_id not in windows:
                c = campaign_repo.get_campaign(session, campaign_id)
                windows[campaign_id] = timedelta(days=c.attribution_window_days if c else 0)
            candidates = [
                r for r in history[(e["customer_external_id"], campaign_id)]
                if r.sent_at is not None and r.sent_at <= occurred <= r.sent_at + windows[campaign_id]
            ]
            send_id = candidates[0].id if candidates else None
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
            }
        )
    return rows


def process_events(session: Session, events: list[dict]) -> dict:
    """Worker: store new events, fold the attributable ones into the send ledger."""
    from datetime import datetime

    now = utcnow()
    for e in events:
        if e.get("occurred_at"):
            e["occurred_at"] = as_utc(datetime.fromisoformat(e["occurred_at"]))
    rows = _attribute(session, events, now)
    new_ids = repo.insert_new_events(session, rows)
    clicks: dict[int, dict] = {}
    conversions: dict[int, dict] = {}
    for r in rows:
        if r["event_id"] not in new_ids or r["send_id"] is None:
            continue
        target = clicks if r["type"] == EventType.CLICK else conversions
        agg = target.setdefault(r["send_id"], {"sid": r["send_id"], "n": 0, "rev": 0.0, "at": r["occurred_at"]})
        agg["n"] += 1
        agg["rev"] += r["revenue"]
        agg["at"] = min(agg["at"], r["occurred_at"])
    repo.apply_clicks(session, [{k: v for k, v in a.items() if k != "rev"} for a in clicks.values()])
    repo.apply_conversions(session, list(conversions.values()))
    applied = sum(1 for r in rows if r["event_id"] in new_ids and r["send_id"] is not None)
    return {"received": len(rows), "new": len(new_ids), "applied": applied, "duplicates": len(rows) - len(new_ids)}
