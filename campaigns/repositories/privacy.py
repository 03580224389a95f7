"""Queries over everything stored about one customer (GDPR export and erasure). Each reads through an
index: customer.external_id, order.customer_id, send.customer_id, event.send_id and the partial index
over event.customer_external_id."""

from sqlalchemy import and_, bindparam, delete, or_, select, update
from sqlmodel import Session

from campaigns.models import Campaign, Customer, Event, Order, Segment, Send, SendPeriod, Variant


def customer(session: Session, external_id: str, *, for_update: bool = False) -> Customer | None:
    stmt = select(Customer).where(Customer.external_id == external_id)
    if for_update:
        stmt = stmt.with_for_update()
    return session.execute(stmt).scalars().first()


def segment_name(session: Session, segment_id: int | None) -> str | None:
    return None if segment_id is None else session.execute(
        select(Segment.name).where(Segment.id == segment_id)).scalar_one_or_none()


def orders(session: Session, customer_id: int) -> list[Order]:
    stmt = select(Order).where(Order.customer_id == customer_id).order_by(Order.ordered_at, Order.id)
    return list(session.execute(stmt).scalars())


def sends(session: Session, customer_id: int):
    """The customer's ledger rows with their campaign, period number, segment and variant."""
    stmt = (
        select(Send, Campaign.name.label("campaign"), SendPeriod.number.label("period"),
               Segment.name.label("segment"), Variant.key.label("variant"), Variant.params.label("params"))
        .outerjoin(Campaign, Campaign.id == Send.campaign_id)
        .outerjoin(SendPeriod, SendPeriod.id == Send.period_id)
        .outerjoin(Segment, Segment.id == Send.segment_id)
        .outerjoin(Variant, and_(Variant.campaign_id == Send.campaign_id, Variant.arm == Send.arm))
        .where(Send.customer_id == customer_id)
        .order_by(Send.id)
    )
    return session.execute(stmt).all()


CHUNK = 1_000  # ids per IN list (SQLite's bound-parameter limit)


def _event_conditions(send_ids: list[int], external_id: str):
    """Two index lookups, never one OR over a subquery (which would scan the whole event table):
    events of the customer's sends (a literal id list, one per send: few), and events naming the
    customer by external id (conversions posted by customer id, attributed or not; unsubscribes)."""
    for start in range(0, len(send_ids), CHUNK):
        yield Event.send_id.in_(send_ids[start:start + CHUNK])
    yield Event.customer_external_id == external_id


def events(session: Session, send_ids: list[int], external_id: str) -> list[Event]:
    found: dict[int, Event] = {}
    for condition in _event_conditions(send_ids, external_id):
        for e in session.execute(select(Event).where(condition)).scalars():
            found[e.id] = e
    return sorted(found.values(), key=lambda e: (e.occurred_at, e.id))


def scrub_events(session: Session, send_ids: list[int], external_id: str) -> int:
    """Remove what identifies the person from their events (external id, user agent); type, status,
    times, revenue and the send they belong to stay, so every count and report is unchanged."""
    scrubbed = 0
    for condition in _event_conditions(send_ids, external_id):
        named = or_(Event.customer_external_id.is_not(None), Event.user_agent.is_not(None))
        stmt = (update(Event).where(condition, named).values(customer_external_id=None, user_agent=None)
                .execution_options(synchronize_session=False))
        scrubbed += session.execute(stmt).rowcount
    return scrubbed


def send_errors(session: Session, customer_id: int) -> list[tuple[int, str]]:
    stmt = select(Send.id, Send.error).where(Send.customer_id == customer_id, Send.error.is_not(None))
    return [(r[0], r[1]) for r in session.execute(stmt).all()]


def set_send_errors(session: Session, rows: list[dict]) -> None:
    """[{"sid", "err"}]"""
    if rows:
        t = Send.__table__
        session.connection().execute(update(t).where(t.c.id == bindparam("sid")).values(error=bindparam("err")), rows)


def delete_orders(session: Session, customer_id: int) -> int:
    return session.execute(delete(Order).where(Order.customer_id == customer_id)
                           .execution_options(synchronize_session=False)).rowcount


def periods_of(session: Session, period_ids: set[int]) -> list[SendPeriod]:
    """The periods an erased customer was sent in, locked: their failure summaries name examples."""
    if not period_ids:
        return []
    stmt = select(SendPeriod).where(SendPeriod.id.in_(period_ids)).with_for_update()
    return list(session.execute(stmt).scalars())
