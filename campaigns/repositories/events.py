"""Queries over feedback events and their effect on the send ledger."""

from sqlalchemy import ARRAY, BigInteger, bindparam, func, select, text, update
from sqlmodel import Session

from campaigns.db import insert_ignoring_conflicts, is_postgres
from campaigns.models import Campaign, Customer, Event, EventStatus, EventType, Send, SendStatus


def existing_send_ids(session: Session, ids: set[int]) -> set[int]:
    return set(session.execute(select(Send.id).where(Send.id.in_(ids))).scalars()) if ids else set()


def existing_campaign_ids(session: Session, ids: set[int]) -> set[int]:
    return set(session.execute(select(Campaign.id).where(Campaign.id.in_(ids))).scalars()) if ids else set()


def sends_by_id(session: Session, ids: set[int]):
    """Delivered sends by id. PostgreSQL gets the ids as one array: an IN list of thousands of
    parameters cost more to bind than the lookup itself."""
    if not ids:
        return {}
    pg = is_postgres(session)
    where = Send.id == func.any(bindparam("ids", type_=ARRAY(BigInteger))) if pg else Send.id.in_(ids)
    stmt = select(Send.id, Send.campaign_id, Send.sent_at).where(where, Send.status == SendStatus.SENT)
    return {r.id: r for r in session.execute(stmt, {"ids": list(ids)} if pg else {}).all()}


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


# PostgreSQL column types of the event row, for the one-array-per-column insert.
_EVENT_COLUMNS = (("event_id", "TEXT"), ("type", "TEXT"), ("status", "TEXT"), ("campaign_id", "INTEGER"),
                  ("send_id", "BIGINT"), ("customer_external_id", "TEXT"), ("revenue", "FLOAT8"),
                  ("occurred_at", "TIMESTAMPTZ"), ("received_at", "TIMESTAMPTZ"), ("reason", "TEXT"),
                  ("user_agent", "TEXT"), ("link", "INTEGER"))
_INSERT_EVENTS_PG = text(
    f"INSERT INTO event ({', '.join(c for c, _ in _EVENT_COLUMNS)}) "  # noqa: S608 (constant columns)
    f"SELECT * FROM unnest({', '.join(f'CAST(:{c} AS {t}[])' for c, t in _EVENT_COLUMNS)}) "
    f"AS v({', '.join(c for c, _ in _EVENT_COLUMNS)}) ORDER BY event_id "
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id")


def insert_new_events(session: Session, rows: list[dict]) -> set[str]:
    """Insert events, skipping ids already stored; returns the ids that were new. Rows go in event id
    order, so two workers inserting overlapping batches wait on each other instead of deadlocking.
    PostgreSQL: one statement over one array per column (an executemany of multi-row VALUES made
    psycopg rewrite 12,000 placeholders per 1,000 rows: two thirds of the worker's fold time)."""
    if not rows:
        return set()
    if is_postgres(session):
        return set(session.execute(_INSERT_EVENTS_PG, {c: [r[c] for r in rows] for c, _ in _EVENT_COLUMNS}).scalars())
    stmt = insert_ignoring_conflicts(session, Event.__table__, ["event_id"]).returning(Event.__table__.c.event_id)
    return set(session.execute(stmt, sorted(rows, key=lambda r: r["event_id"])).scalars())


def lock_sends(session: Session, ids: list[int]) -> None:
    """Row-lock sends in id order (the ids as one array). Two workers folding overlapping batches then
    take their locks in the same order and wait for each other instead of deadlocking, and the click
    history read next includes every click another worker committed. SQLite needs nothing: the
    insert before it already holds the writer lock."""
    if ids and is_postgres(session):
        session.execute(text("SELECT id FROM send WHERE id = ANY(CAST(:ids AS BIGINT[])) ORDER BY id FOR UPDATE"),
                        {"ids": sorted(ids)}).all()


def sends_with_links_clicked(session: Session, ids: list[int], at_least: int) -> list[int]:
    """The sends among `ids` with clicks on at least `at_least` distinct links, ever: the only ones
    that can hold a burst (one aggregate instead of reading every send's clicks)."""
    if not ids:
        return []
    stmt = (
        select(Event.send_id)
        .where(Event.send_id.in_(ids), Event.type == EventType.CLICK, Event.link.is_not(None))
        .group_by(Event.send_id)
        .having(func.count(Event.link.distinct()) >= at_least)
    )
    return list(session.execute(stmt).scalars())


def clicks_of_sends(session: Session, ids: list[int]):
    """Every stored click of these sends that names its link: (event_id, send_id, occurred_at, link, status)."""
    if not ids:
        return []
    stmt = select(Event.event_id, Event.send_id, Event.occurred_at, Event.link, Event.status).where(
        Event.send_id.in_(ids), Event.type == EventType.CLICK, Event.link.is_not(None)
    )
    return session.execute(stmt).all()


def mark_excluded(session: Session, event_ids: list[str], reason: str) -> None:
    """Turn applied events into excluded ones; already excluded ones keep their first reason."""
    t = Event.__table__
    for start in range(0, len(event_ids), 1000):  # stay under SQLite's bound-parameter limit
        part = event_ids[start:start + 1000]
        session.connection().execute(
            update(t)
            .where(t.c.event_id.in_(part), t.c.status == EventStatus.APPLIED)
            .values(status=EventStatus.EXCLUDED, reason=reason)
        )


def apply_clicks(session: Session, params: list[dict]) -> None:
    """[{"sid", "n", "at"}]: increments are atomic in SQL, so concurrent workers never lose one."""
    if params and is_postgres(session):
        session.execute(text(
            "UPDATE send SET clicks = send.clicks + v.n, first_click_at = COALESCE(send.first_click_at, v.at) "
            "FROM unnest(CAST(:ids AS BIGINT[]), CAST(:n AS INTEGER[]), CAST(:at AS TIMESTAMPTZ[])) AS v(id, n, at) "
            "WHERE send.id = v.id"),
            {"ids": [p["sid"] for p in params], "n": [p["n"] for p in params], "at": [p["at"] for p in params]})
    elif params:
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


def rebase_clicks(session: Session, params: list[dict]) -> None:
    """[{"sid", "n"}]: add n (negative when clicks counted before turned out to be a bot's) and take
    first_click_at again from the send's applied clicks."""
    if params:
        t, e = Send.__table__, Event.__table__
        first = (
            select(func.min(e.c.occurred_at))
            .where(e.c.send_id == t.c.id, e.c.type == EventType.CLICK, e.c.status == EventStatus.APPLIED)
            .scalar_subquery()
        )
        stmt = update(t).where(t.c.id == bindparam("sid")).values(
            clicks=t.c.clicks + bindparam("n"), first_click_at=first
        )
        session.connection().execute(stmt, params)


def apply_conversions(session: Session, params: list[dict]) -> None:
    """[{"sid", "n", "rev", "at"}]; PostgreSQL: one UPDATE over arrays, SQLite: an executemany."""
    if params and is_postgres(session):
        session.execute(text(
            "UPDATE send SET conversions = send.conversions + v.n, revenue = send.revenue + v.rev, "
            "first_conversion_at = COALESCE(send.first_conversion_at, v.at) "
            "FROM unnest(CAST(:ids AS BIGINT[]), CAST(:n AS INTEGER[]), CAST(:rev AS FLOAT8[]), "
            "CAST(:at AS TIMESTAMPTZ[])) AS v(id, n, rev, at) WHERE send.id = v.id"),
            {"ids": [p["sid"] for p in params], "n": [p["n"] for p in params], "rev": [p["rev"] for p in params],
             "at": [p["at"] for p in params]})
    elif params:
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


def feedback_counts(session: Session, campaign_id: int | None):
    """(type, status, reason, count) of one campaign's events; campaign_id None: the events that name no
    known campaign."""
    where = Event.campaign_id.is_(None) if campaign_id is None else Event.campaign_id == campaign_id
    stmt = (
        select(Event.type, Event.status, Event.reason, func.count())
        .where(where)
        .group_by(Event.type, Event.status, Event.reason)
    )
    return session.execute(stmt).all()
