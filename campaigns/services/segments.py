"""Segments, and the behavioural (RFM) segmentation derived from purchase history.

Eight segments come from three yes/no questions over the lookback window (docs/marketer/customers.md):
recent (last order within `rfm_recent_days`), frequent (at least `rfm_frequent_orders` orders),
high spend (at least `rfm_high_spend`). Customers without orders are `hibernating`.
"""

from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from campaigns.errors import Conflict, InvalidInput
from campaigns.models import Segment, as_utc, utcnow
from campaigns.repositories import customers as repo
from campaigns.settings import get_settings

# (recent, frequent, high spend) -> segment name. Seeded by the initial migration.
RFM_SEGMENTS: dict[tuple[bool, bool, bool], tuple[str, str]] = {
    (True, True, True): ("champions", "recent, frequent, high spend"),
    (True, True, False): ("loyal_regulars", "recent, frequent, lower spend"),
    (True, False, True): ("big_spenders", "recent, infrequent, high spend"),
    (True, False, False): ("new_or_occasional", "recent, infrequent, lower spend"),
    (False, True, True): ("cant_lose_them", "lapsed, frequent, high spend"),
    (False, True, False): ("at_risk_regulars", "lapsed, frequent, lower spend"),
    (False, False, True): ("lapsed_big_spenders", "lapsed, infrequent, high spend"),
    (False, False, False): ("hibernating", "lapsed or never ordered, infrequent, lower spend"),
}


def rfm_segment(days_since_last: float | None, orders: int, spend: float) -> str:
    s = get_settings()
    recent = days_since_last is not None and days_since_last <= s.rfm_recent_days
    key = (recent, orders >= s.rfm_frequent_orders, spend >= s.rfm_high_spend)
    return RFM_SEGMENTS[key][0]


def create_segment(session: Session, name: str, description: str) -> dict:
    if name in repo.segments_by_name(session):
        raise Conflict(f"segment '{name}' already exists")
    seg = Segment(name=name, description=description)
    session.add(seg)
    try:
        with session.begin_nested():  # the unique name decides a race between two creators
            session.flush()
    except IntegrityError:
        raise Conflict(f"segment '{name}' already exists") from None
    return {"id": seg.id, "name": seg.name, "description": seg.description, "customers": 0}


def derive_segments(session: Session, as_of: datetime | None = None) -> dict:
    """Re-segment every customer from purchase history as of `as_of` (default now)."""
    s = get_settings()
    until = as_utc(as_of) if as_of else utcnow()
    since = until - timedelta(days=s.rfm_lookback_days)
    ids = repo.segments_by_name(session)
    missing = [name for name, _ in RFM_SEGMENTS.values() if name not in ids]
    if missing:
        raise InvalidInput("segments", f"RFM segments missing from the database: {', '.join(missing)}")
    # One UPDATE in the database: each customer's segment id from (recent, frequent, high spend);
    # no Python object per customer, whatever the audience size.
    segment_of = {key: ids[name] for key, (name, _) in RFM_SEGMENTS.items()}
    repo.derive_rfm_segments(session, segment_of, until=until, since=since,
                             recent_since=until - timedelta(days=s.rfm_recent_days),
                             frequent_orders=s.rfm_frequent_orders, high_spend=s.rfm_high_spend)
    counts = repo.segment_customer_counts(session)
    by_segment = {name: counts[ids[name]] for name, _ in RFM_SEGMENTS.values() if counts.get(ids[name])}
    return {"as_of": until, "customers": sum(by_segment.values()), "by_segment": by_segment}
