"""Queries over the send ledger: audience selection, bulk claims, delivery results, aggregates."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np
from sqlalchemy import Float, and_, bindparam, case, func, literal, select, text, update
from sqlmodel import Session

from campaigns import audience_filter
from campaigns.db import is_postgres
from campaigns.models import Customer, Event, EventStatus, EventType, Send, SendPeriod, SendStatus


def _driver_connection(session: Session):
    """The DBAPI connection under the session's transaction: bulk paths (COPY, executemany of
    tuples) skip the ORM's per-row work but stay in the same unit of work."""
    return session.connection().connection.driver_connection


# Binary COPY of one bigint column: a 19-byte header, then per row a 2-byte field count, a 4-byte
# length and the 8-byte value (big-endian), then a 2-byte trailer.
_COPY_BIGINT_ROW = np.dtype([("fields", ">i2"), ("length", ">i4"), ("value", ">i8")])


CAPPED_TABLE = "capped_customer"
LIVE_TABLE = "live_claim"  # the other periods' live claims per customer, refreshed by each claim


class Cap(NamedTuple):
    """The frequency cap as one plan applies it (what `capped_customers` yields).

    The temporary table counts the window's mail of the periods that were finished when the plan
    began. The others — in flight then (`in_flight`) or created since (ids above `last_period_id`)
    — are counted live by every segment's claim, queued rows included: a customer another
    campaign's period has claimed holds a slot before the email leaves, so two periods planned at
    the same time cannot both take the last one (the claims are serialised: contention.lock_cap)."""

    limit: int
    since: object  # a datetime (PostgreSQL), the stored text of one (SQLite)
    in_flight: tuple[int, ...]
    last_period_id: int


@contextmanager
def capped_customers(session: Session, cap: tuple[int, datetime] | None) -> Iterator[Cap | bool]:
    """The customers at the cross-campaign frequency cap (`cap` = (max emails, since when)) through
    the mail of the periods finished when the plan began, counted once per plan into a temporary
    table that every segment's audience query then anti-joins (`eligible_customer_ids(...,
    capped=<Cap>)`); the other periods' mail is counted live (`Cap`). Counted inside
    each segment's query instead, the window's sends (a whole weekly period of them) were grouped
    once per segment: 8 times. Only periods that can hold mail sent since `since` are read (not
    completed before it), through the ledger's unique (period_id, customer_id) index. Yields a `Cap`,
    or False when there is no cap.

    The plan commits segment by segment, so `session` must keep one connection throughout
    (`db.pinned_session_scope`): a temporary table belongs to its connection and outlives commits.
    The table goes with the transaction that counted it if that fails, and is dropped when the plan
    is done; one left by a crashed plan on a pooled connection is dropped by the next plan there."""
    if cap is None:
        yield False
        return
    limit, since = cap
    pg = is_postgres(session)
    if not pg:  # the format SQLAlchemy stores SQLite datetimes in (UTC, always with microseconds)
        since = since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    mark = (lambda name: f"%({name})s") if pg else (lambda name: f":{name}")
    cur = _driver_connection(session).cursor()
    try:
        # the last period first: one finishing in between is then in the table, not lost between both
        cur.execute("SELECT coalesce(max(id), 0) FROM send_period")
        last = int(cur.fetchone()[0])
        cur.execute("SELECT id FROM send_period WHERE status IN ('queued', 'running') ORDER BY id")
        in_flight = tuple(int(r[0]) for r in cur.fetchall())
        not_in_flight = f"AND p.id NOT IN ({', '.join(map(str, in_flight))})" if in_flight else ""
        # (a table left by a plan whose transaction did not undo it would make CREATE fail)
        cur.execute(f"DROP TABLE IF EXISTS {CAPPED_TABLE}")
        cur.execute(f"DROP TABLE IF EXISTS {LIVE_TABLE}")
        cur.execute(f"CREATE TEMPORARY TABLE {CAPPED_TABLE} (customer_id BIGINT NOT NULL)")
        cur.execute(f"CREATE TEMPORARY TABLE {LIVE_TABLE} (customer_id BIGINT NOT NULL, n BIGINT NOT NULL)")
        cur.execute(f"""
            INSERT INTO {CAPPED_TABLE} (customer_id)
            SELECT s.customer_id FROM send s
            WHERE s.period_id IN (SELECT p.id FROM send_period p
                                  WHERE (p.completed_at IS NULL OR p.completed_at >= {mark("since")})
                                    AND p.id <= {last} {not_in_flight})
              AND s.status = 'sent' AND s.sent_at >= {mark("since")}
            GROUP BY s.customer_id HAVING count(*) >= {mark("cap_limit")}""",  # noqa: S608 (placeholders, integers)
                    {"since": since, "cap_limit": limit})
        if pg:
            cur.execute(f"ANALYZE {CAPPED_TABLE}")  # autovacuum never analyses a temporary table
    finally:
        cur.close()
    yield Cap(limit, since, in_flight, last)
    session.execute(text(f"DROP TABLE {CAPPED_TABLE}"))
    session.execute(text(f"DROP TABLE {LIVE_TABLE}"))


def _live_periods(session: Session, cap: Cap, period_id: int, alias: str) -> str:
    """The other periods a claim counts live — in flight when the plan began, or newer — as a
    condition on `alias`.period_id with their ids written in (integers, a few): the planners then
    read the ledger through its (period_id, customer_id) index, those periods' rows only (with a
    subquery there, PostgreSQL scanned the whole ledger once per segment)."""
    listed = f" OR id IN ({', '.join(map(str, cap.in_flight))})" if cap.in_flight else ""
    rows = session.execute(text(f"SELECT id FROM send_period WHERE (id > :last{listed}) AND id <> :period"),  # noqa: S608
                           {"last": cap.last_period_id, "period": period_id}).all()
    ids = [int(r[0]) for r in rows]
    return f"{alias}.period_id IN ({', '.join(map(str, ids))})" if ids else "1 = 0"


def refresh_live_claims(session: Session, cap: Cap, period_id: int, segment_id: int) -> None:
    """Count again, into the plan's `live_claim` table, the other periods' live claims per customer
    of the segment (in flight when the plan began, or newer; queued, or sent in the window), in the
    claim's transaction, under the cap lock: what the segment's audience query then joins. Under a cap above
    one, each such customer's mail from the finished periods is added (few customers, one by one).
    A table with fresh statistics, not a subquery: with a guessed size, PostgreSQL re-ran the
    subquery for every customer of the segment."""
    count = "count(*)"
    if cap.limit > 1:
        live = f" AND s3.period_id NOT IN ({', '.join(map(str, cap.in_flight))})" if cap.in_flight else ""
        count += f""" + (SELECT count(*) FROM send s3
                         WHERE s3.customer_id = s2.customer_id AND s3.period_id <= %(cap_last)s{live}
                           AND s3.status = 'sent' AND s3.sent_at >= %(cap_since)s)"""  # noqa: S608 (integers)
    sql = f"""INSERT INTO {LIVE_TABLE} (customer_id, n)
        SELECT s2.customer_id, {count} FROM send s2
        WHERE {_live_periods(session, cap, period_id, "s2")}
          AND s2.customer_id IN (SELECT c2.id FROM customer c2 WHERE c2.segment_id = %(segment_id)s)
          AND (s2.status = 'queued' OR (s2.status = 'sent' AND s2.sent_at >= %(cap_since)s))
        GROUP BY s2.customer_id"""  # noqa: S608 (integers)
    params = {"cap_last": cap.last_period_id, "cap_since": cap.since, "segment_id": segment_id}
    pg = is_postgres(session)
    cur = _driver_connection(session).cursor()
    try:
        cur.execute(f"DELETE FROM {LIVE_TABLE}")  # noqa: S608
        cur.execute(sql if pg else sql.replace("%(", ":").replace(")s", ""), params)
        if pg:
            cur.execute(f"ANALYZE {LIVE_TABLE}")
    finally:
        cur.close()


def _under_cap(cap: Cap) -> tuple[str, str, dict]:
    """(joins, condition, params): the customer `c` is under the cap: not at it through the finished
    periods' mail (the table `k`), nor with the other periods' live claims added (the table `l`,
    `refresh_live_claims`). Anti-joins, which the planners run set-based."""
    cond = (f"NOT EXISTS (SELECT 1 FROM {CAPPED_TABLE} k WHERE k.customer_id = c.id) "  # noqa: S608
            f"AND NOT EXISTS (SELECT 1 FROM {LIVE_TABLE} l WHERE l.customer_id = c.id AND l.n >= %(cap_limit)s)")
    return "", cond, {"cap_last": cap.last_period_id, "cap_since": cap.since, "cap_limit": cap.limit}


def _segment_audience(session: Session, segment_id: int, period_id: int, capped: Cap | bool,
                      audience: dict | None, under_cap: bool = True) -> tuple[str, str, dict]:
    """(joins, WHERE clause, params) of a segment's customers the period may mail: active,
    consenting, in the audience, not yet claimed in the period and, with `capped`, under the cap
    (or, `under_cap=False`, at it)."""
    params: dict = {"segment_id": segment_id, "period_id": period_id}
    join, cap_clause = "", ""
    if capped:
        join, cond, cap_params = _under_cap(capped)
        cap_clause = f"AND {cond}" if under_cap else f"AND NOT ({cond})"
        params.update(cap_params)
    audience_clause, audience_params = audience_filter.sql(audience, is_postgres(session), "c.attributes")
    params.update(audience_params)  # bound values only
    where = f"""c.segment_id = %(segment_id)s AND c.status = 'active' AND c.consent = TRUE
          AND NOT EXISTS (SELECT 1 FROM send s WHERE s.period_id = %(period_id)s AND s.customer_id = c.id)
          {cap_clause} {audience_clause}"""  # noqa: S608 (placeholders and integers only)
    return join, where, params


def eligible_customer_ids(session: Session, segment_id: int, period_id: int, capped: Cap | bool = False,
                          audience: dict | None = None) -> np.ndarray:
    """Active, consenting customers of the segment not yet claimed in this period and, with
    `capped`, under the frequency cap (inside `capped_customers`, after `refresh_live_claims` in
    the same transaction), in id order (deterministic).

    Set-based, and fetched straight into numpy (binary COPY on PostgreSQL): no Python object per
    customer."""
    pg = is_postgres(session)
    join, where, params = _segment_audience(session, segment_id, period_id, capped, audience)
    sql = f"""
        SELECT {"CAST(c.id AS BIGINT)" if pg else "c.id"} FROM customer c {join}
        WHERE {where}
        ORDER BY c.id"""  # noqa: S608 (no values are formatted in: only the optional clauses)
    if pg:
        with _driver_connection(session).cursor() as cur:
            with cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT BINARY)", params) as copy:
                data = b"".join(bytes(block) for block in copy)
        if len(data) <= 21:
            return np.empty(0, dtype=np.int64)
        return np.frombuffer(data[19:-2], dtype=_COPY_BIGINT_ROW)["value"].astype(np.int64)
    cur = _driver_connection(session).cursor()
    try:
        cur.execute(sql.replace("%(", ":").replace(")s", ""), params)  # sqlite3 takes :name placeholders
        ids = np.empty(0, dtype=np.int64)
        parts = []
        while block := cur.fetchmany(100_000):
            parts.append(np.fromiter((r[0] for r in block), dtype=np.int64, count=len(block)))
        return np.concatenate(parts) if parts else ids
    finally:
        cur.close()


def capped_by_campaign(session: Session, segment_id: int, period_id: int, cap: Cap,
                       audience: dict | None = None) -> dict[int, int]:
    """{campaign id: customers}: the segment's customers this period would mail but for the cap, by
    the campaign whose mail in the window (sent, or claimed by a period in flight) holds their
    slots. A customer held by two campaigns counts for each."""
    join, where, params = _segment_audience(session, segment_id, period_id, cap, audience, under_cap=False)
    sql = f"""
        SELECT x.campaign_id, count(DISTINCT c.id) FROM customer c {join}
        JOIN send x ON x.customer_id = c.id AND x.period_id <> %(period_id)s
          AND x.period_id IN (SELECT p.id FROM send_period p  -- the ledger's period index: recent rows only
                              WHERE p.completed_at IS NULL OR p.completed_at >= %(cap_since)s)
          AND ((x.status = 'sent' AND x.sent_at >= %(cap_since)s)
               OR (x.status = 'queued' AND {_live_periods(session, cap, period_id, "x")}))
        WHERE {where}
        GROUP BY x.campaign_id"""  # noqa: S608 (placeholders and integers only)
    cur = _driver_connection(session).cursor()
    try:
        if is_postgres(session):
            cur.execute(sql, params)
        else:
            cur.execute(sql.replace("%(", ":").replace(")s", ""), params)
        return {int(cid): int(n) for cid, n in cur.fetchall()}
    finally:
        cur.close()


CLAIM_COLUMNS = ("campaign_id", "period_id", "segment_id", "status", "clicks", "conversions", "revenue",
                 "customer_id", "arm", "propensity")


def claim_sends(
    session: Session, campaign_id: int, period_id: int, segment_id: int,
    customer_ids: np.ndarray, arms: np.ndarray, propensities: np.ndarray,
) -> None:
    """Write one segment's ledger rows in bulk: PostgreSQL `COPY`, SQLite one `executemany` of
    tuples, both inside the caller's transaction.

    Exactly once: the caller holds the period's plan lock and selected only customers not yet
    claimed in this period, so nothing can conflict; if anything ever did, the unique
    (period_id, customer_id) constraint fails the segment's transaction, which then reruns."""
    if not len(customer_ids):
        return
    fixed = (campaign_id, period_id, segment_id, SendStatus.QUEUED.value, 0, 0, 0.0)
    cols = ", ".join(CLAIM_COLUMNS)
    if is_postgres(session):
        prefix = "\t".join(str(v) for v in fixed) + "\t"
        with _driver_connection(session).cursor() as cur, cur.copy(f"COPY send ({cols}) FROM STDIN") as copy:
            for start in range(0, len(customer_ids), 50_000):  # bounded memory per write
                stop = start + 50_000
                copy.write("".join(
                    f"{prefix}{c}\t{a}\t{p!r}\n"
                    for c, a, p in zip(customer_ids[start:stop].tolist(), arms[start:stop].tolist(),
                                       propensities[start:stop].tolist(), strict=True)))
        return
    cur = _driver_connection(session).cursor()
    try:
        cur.executemany(
            f"INSERT INTO send ({cols}) VALUES ({', '.join('?' * len(CLAIM_COLUMNS))})",  # noqa: S608
            ((*fixed, c, a, p) for c, a, p in zip(customer_ids.tolist(), arms.tolist(), propensities.tolist(),
                                                  strict=True)))
    finally:
        cur.close()


def refresh_statistics(session: Session) -> None:
    """PostgreSQL: re-sample the ledger's statistics right after a bulk claim (inside the segment's
    transaction), so the queries that follow are planned on the real row counts, not on the
    ones autovacuum saw before millions of rows arrived. A sample: cheap at any size."""
    if is_postgres(session):
        session.execute(text("ANALYZE send"))


def max_send_id(session: Session) -> int:
    """The ledger's highest send id (the primary key's last entry): where the next claim starts."""
    return session.execute(select(func.coalesce(func.max(Send.id), 0))).scalar_one()


def claimed_since(session: Session, period_id: int, after_id: int) -> tuple[int | None, int | None, int]:
    """(first id, last id, count) of the period's sends with ids above `after_id`: the rows a claim
    just wrote when `after_id` was `max_send_id` before it (the caller holds the plan lock, so no
    other claim of this period ran in between; rows of other periods in the range are skipped by
    every query that reads a chunk). On the primary key, `period_id + 0` as in `_QUEUED_BATCH`."""
    row = session.execute(text("SELECT min(id), max(id), count(*) FROM send WHERE id > :after AND period_id + 0 = :p"),
                          {"after": after_id, "p": period_id}).one()
    return row[0], row[1], row[2]


_QUEUED_BATCH = """
    SELECT s.id, s.arm, c.external_id, c.email, CAST(c.attributes AS TEXT), c.status
    FROM send s JOIN customer c ON c.id = s.customer_id
    WHERE s.id >= {first} AND s.id <= {last} AND s.period_id + 0 = {period} AND s.status = 'queued'
    ORDER BY s.id"""
# `s.period_id + 0`: keeps both planners off the unique (period_id, customer_id) index, which they
# otherwise pick (SQLite always; PostgreSQL with stale statistics right after the claim) and which
# scans the whole period for every batch — 25 ms per batch of 500 at 1M sends instead of 1 ms.
_QUEUED_BATCH_PG = _QUEUED_BATCH.format(first="%(first_id)s", last="%(last_id)s", period="%(period_id)s")
_QUEUED_BATCH_SQLITE = _QUEUED_BATCH.format(first=":first_id", last=":last_id", period=":period_id")
_decode_json = json.JSONDecoder().decode


def queued_batch(session: Session, period_id: int, first_id: int, last_id: int) -> list:
    """The claimed-but-unsent rows with send ids in [first_id, last_id] (a slice of a chunk), with
    what rendering needs about the customer — read just before delivery, so suppression is
    checked at send time. Paging by id range keeps every read on the primary key. On the driver's
    own cursor, inside the session's transaction: this runs for every email, and SQLAlchemy's row
    processing cost more than the query; the attributes come as JSON text and are decoded here
    (the driver's JSON loader adds two Python calls per row)."""
    params = {"first_id": first_id, "last_id": last_id, "period_id": period_id}
    cur = _driver_connection(session).cursor()
    try:
        cur.execute(_QUEUED_BATCH_PG if is_postgres(session) else _QUEUED_BATCH_SQLITE, params)
        rows = cur.fetchall()
    finally:
        cur.close()
    return [QueuedSend(i, arm, ext, email, _decode_json(attrs) if attrs else None, status)
            for i, arm, ext, email, attrs, status in rows]


class QueuedSend(NamedTuple):
    id: int
    arm: int
    external_id: str
    email: str
    attributes: dict | None
    status: str


_MARK_SENT_PG = text("""
    UPDATE send SET status = 'sent', message_id = v.mid, sent_at = to_timestamp(v.at)
    FROM unnest(CAST(string_to_array(:ids, ',') AS BIGINT[]), string_to_array(:mids, E'\\n'),
                CAST(string_to_array(:ats, ',') AS FLOAT8[])) AS v(id, mid, at)
    WHERE send.id = v.id AND send.status = 'queued'""")
# The batch travels as three joined strings (ids, Message-IDs one a line — a header value cannot
# hold a newline —, epoch seconds) that the server splits: the driver dumps a Python list element by
# element (a regex per element for quoting), which cost more per email than the UPDATE itself. The
# UPDATE stays heap-only (HOT): no index covers the columns it sets and the table's fillfactor (35,
# migration 0010) leaves room on the row's page.


def record_results(session: Session, results: list[dict]) -> None:
    """[{"sid", "new_status", "err", "mid", "at"}, …] (`at`: epoch seconds); only queued rows move.
    Delivered rows: PostgreSQL one set-based UPDATE per batch (arrays unnested), SQLite one
    executemany. Failed rows (few) always by executemany."""
    if not results:
        return
    sent = [r for r in results if r["new_status"] == SendStatus.SENT]
    failed = [r for r in results if r["new_status"] != SendStatus.SENT] if len(sent) < len(results) else []
    t = Send.__table__
    queued = and_(t.c.id == bindparam("sid"), t.c.status == SendStatus.QUEUED)
    if sent and is_postgres(session):
        mids = "\n".join([r["mid"] for r in sent])
        if mids.count("\n") != len(sent) - 1:
            raise ValueError("a Message-ID holds a newline")  # it would shift the ids' pairing
        session.execute(_MARK_SENT_PG, {"ids": ",".join([str(r["sid"]) for r in sent]), "mids": mids,
                                        "ats": ",".join([repr(r["at"]) for r in sent])})
    elif sent:
        stmt = update(t).where(queued).values(status=SendStatus.SENT, message_id=bindparam("mid"),
                                              sent_at=bindparam("ts"))
        session.connection().execute(stmt, [{**r, "ts": datetime.fromtimestamp(r["at"], UTC)} for r in sent])
    if failed:
        stmt = update(t).where(queued).values(status=bindparam("new_status"), error=bindparam("err"))
        session.connection().execute(stmt, failed)


def add_progress(session: Session, period_id: int, sent: int, failed: int, now_epoch: float, tau: float) -> None:
    """Atomic increments: chunks finishing on many workers at once never lose a count. The recent
    rate is updated in the same statement, from the row's own values under its lock (the formula:
    campaigns/services/period_health.py)."""
    t = SendPeriod.__table__
    now = literal(now_epoch, Float)
    last = func.coalesce(t.c.progress_epoch, now)
    gap = case((last < now, now - last), else_=literal(0.0, Float)) + tau
    session.execute(update(t).where(t.c.id == period_id).values(
        sent=t.c.sent + sent, failed=t.c.failed + failed,
        recent_rate=t.c.recent_rate * tau / gap + (sent + failed) / gap,
        progress_epoch=case((last > now, last), else_=now),
    ))


def lock_period_failures(session: Session, period_id: int) -> SendPeriod:
    """The period's row, locked for a read-modify-write of its failure summary."""
    stmt = select(SendPeriod).where(SendPeriod.id == period_id).with_for_update()
    return session.execute(stmt).scalars().one()


def add_claimed(session: Session, period_id: int, claimed: int, chunks: int) -> None:
    """A segment's claim adds to the period's total and chunk count (atomic increments, written last
    in the segment's transaction: the period's row is also where delivery counts its progress)."""
    t = SendPeriod.__table__
    session.execute(update(t).where(t.c.id == period_id).values(total=t.c.total + claimed,
                                                                 chunks=t.c.chunks + chunks))


def campaign_period_ids(campaign_id: int):
    """The campaign's period ids as a subquery: the way into the ledger by campaign, through its
    unique (period_id, customer_id) index (the ledger has no campaign index on purpose)."""
    return select(SendPeriod.id).where(SendPeriod.campaign_id == campaign_id).scalar_subquery()


def arm_aggregates(session: Session, campaign_id: int, segment_id: int | None = None):
    """Sufficient statistics per (segment, arm) over delivered sends, aggregated by the database."""
    clicked = func.sum(case((Send.first_click_at.is_not(None), 1), else_=0))
    converted = func.sum(case((Send.first_conversion_at.is_not(None), 1), else_=0))
    stmt = (
        select(
            Send.segment_id,
            Send.arm,
            func.count().label("sends"),
            clicked.label("clicks"),
            converted.label("conversions"),
            func.coalesce(func.sum(Send.revenue), 0.0).label("revenue"),
            func.coalesce(func.sum(Send.revenue * Send.revenue), 0.0).label("revenue_sq"),
        )
        .where(Send.period_id.in_(campaign_period_ids(campaign_id)), Send.status == SendStatus.SENT)
        .group_by(Send.segment_id, Send.arm)
    )
    if segment_id is not None:
        stmt = stmt.where(Send.segment_id == segment_id)
    return session.execute(stmt).all()


def pending_by_hour(session: Session, campaign_id: int, since: datetime):
    """Delivered sends since `since` still waiting for feedback, per (segment, arm, hour of delivery):
    not clicked yet, and clicked but not converted yet. The hour lets the caller weigh each by how
    much of its feedback should have arrived by now (a few buckets per period, not a row per send)."""
    if is_postgres(session):
        hour = func.date_trunc("hour", Send.sent_at)
    else:  # SQLite: datetimes are ISO strings
        hour = func.strftime("%Y-%m-%d %H:00:00", Send.sent_at)
    no_click = Send.first_click_at.is_(None)
    no_conversion = and_(Send.first_click_at.is_not(None), Send.first_conversion_at.is_(None))
    stmt = (
        select(Send.segment_id, Send.arm, hour.label("hour"),
               func.sum(case((no_click, 1), else_=0)).label("no_click"),
               func.sum(case((no_conversion, 1), else_=0)).label("no_conversion"))
        .where(Send.period_id.in_(campaign_period_ids(campaign_id)), Send.status == SendStatus.SENT,
               Send.sent_at >= since)
        .group_by(Send.segment_id, Send.arm, hour)
    )
    return session.execute(stmt).all()


def period_assignments(session: Session, period_id: int, after_id: int, limit: int):
    """One page of a period's ledger for export, keyed by send id (keyset pagination)."""
    stmt = (
        select(Send.id, Customer.external_id, Customer.email, Send.segment_id, Send.arm, Send.propensity, Send.status)
        .join(Customer, Customer.id == Send.customer_id)
        .where(Send.period_id == period_id, Send.id > after_id)
        .order_by(Send.id)
        .limit(limit)
    )
    return session.execute(stmt).all()


def latest_send_to(session: Session, email: str) -> tuple[Send, Customer] | None:
    """The latest delivered send to an address and its customer (index ix_customer_email_lower)."""
    row = session.execute(
        select(Send, Customer).join(Customer, Customer.id == Send.customer_id)
        .where(func.lower(Customer.email) == email.lower(), Send.status == SendStatus.SENT)
        .order_by(Send.sent_at.desc(), Send.id.desc()).limit(1)).first()
    return (row[0], row[1]) if row else None


def send_for_message_id(session: Session, send_id: int, seed: int) -> tuple[Send, Customer] | None:
    """The send and its customer that a Message-ID `<send-ID.SEED@…>` names, if the seed is its period's."""
    row = session.execute(
        select(Send, Customer).join(Customer, Customer.id == Send.customer_id)
        .join(SendPeriod, SendPeriod.id == Send.period_id)
        .where(Send.id == send_id, SendPeriod.seed == seed)).first()
    return (row[0], row[1]) if row else None


def send_with_customer(session: Session, send_id: int) -> tuple[Send, Customer] | None:
    """The send and its customer, by the send id a VERP return path names."""
    row = session.execute(
        select(Send, Customer).join(Customer, Customer.id == Send.customer_id).where(Send.id == send_id)).first()
    return (row[0], row[1]) if row else None


def unsubscribes_by_arm(session: Session, campaign_id: int):
    """Per (segment, arm): delivered sends of the campaign with an applied unsubscribe event (one per
    send however often it was reported), through the partial index over unsubscribe events."""
    stmt = (
        select(Send.segment_id, Send.arm, func.count(func.distinct(Event.send_id)).label("unsubscribes"))
        .select_from(Event)
        .join(Send, Send.id == Event.send_id)
        .where(Event.campaign_id == campaign_id, Event.type == EventType.UNSUBSCRIBE,
               Event.status == EventStatus.APPLIED, Send.status == SendStatus.SENT)
        .group_by(Send.segment_id, Send.arm)
    )
    return session.execute(stmt).all()
