"""Queries over feedback events and their effect on the send ledger."""

from sqlalchemy import bindparam, func, select, update
from sqlmodel import Session

from campaigns.db import insert_ignoring_conflicts
from campaigns.models import Campaign, Customer, Event, Send, SendStatus


def existing_send_ids(session: Session, ids: set[int]) -> set[int]:
    return set(session.execute(select(Send.id).where(Send.id.in_(ids))).scalars()) if ids else set()


def existing_campaign_ids(session: Session, ids: set[int]) -> set[int]:
    return set(session.execute(select(Campaign.id).where(Campaign.id.in_(ids))).scalars()) if ids else set()


def sends_by_id(session: Session, ids: set[int]):
    stmt = select(Send.id, Send.campaign_id, Send.sent_at).where(Send.id.in_(ids), Send.status == SendStatus.SENT)
    return {r.id: r for r in session.execute(stmt).all()} if ids else {}


def sends_of_customers(session: Session, pairs: set[tuple[str, int]]):
    """Delivered sends of (customer external id, campaign) pairs, newest first."""
    if not pairs:
        return []
    externals = {p[0] for p in pairs}
    campaigns = {p[1] for p in pairs}
    stmt = (
        select(Customer.external_id, Send.campaign_id, Send.id, Send.sent_at)
        .join(Customer, Customer.id == Send.customer_id)
        .where(
            Customer.external_id.in_(externals),
            Send.campaign_id.in_(campaigns),
            Send.status == SendStatus.SENT,
        )
        .order_by(Send.sent_at.desc())
    )
    return session.execute(stmt).all()


def insert_new_events(session: Session, rows: list[dict]) -> set[str]:
    """Insert events, skipping ids already stored; returns the ids that were new."""
    if not rows:
        return set()
    stmt = insert_ignoring_conflicts(session, Event.__table__, ["event_id"]).returning(Event.__table__.c.event_id)
    return set(session.execute(stmt, rows).scalars())


def apply_clicks(session: Session, params: list[dict]) -> None:
    """[{"sid", "n", "at"}]: increments are atomic in SQL, so concurrent workers never lose one."""
    if params:
        t = Send.__table__
        stmt = (
            update(t)
            .where(t.c.id == bindparam("sid"))
            .values(
                clicks=t.c.clicks + bindparam("n"),
                first_click_at=func.coalesce(t.c.first_click_at, bindparam("at")),
            )
        )
        session.connection().execute(stmt, params)


def apply_conversions(session: Session, params: list[dict]) -> None:
    """[{"sid", "n", "rev", "at"}]"""
    if params:
        t = Send.__table__
        stmt = (
            update(t)
            .where(t.c.id == bindparam("sid"))
            .values(
                conversions=t.c.conversions + bindparam("n"),
                revenue=t.c.revenue + bindparam("rev"),
                first_conversion_at=func.coalesce(t.c.first_conversion_at, bindparam("at")),
            )
        )
        session.connection().execute(stmt, params)


def event_counts(session: Session, campaign_id: int) -> dict[tuple[str, str], int]:
    stmt = (
        select(Event.type, Event.status, func.count())
        .where(Event.campaign_id == campaign_id)
        .group_by(Event.type, Event.status)
    )
    return {(t, s): n for t, s, n in session.execute(stmt).all()}
