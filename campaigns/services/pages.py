"""Paginated lists: each returns one page (in the list's usual shape) and the cursor of the next
page, or None on the last one. A cursor is opaque to clients: the key of the page's last item."""

import re

from sqlmodel import Session

from campaigns.errors import InvalidInput
from campaigns.repositories import pages as repo
from campaigns.schemas import INT_MAX
from campaigns.services import campaigns as campaign_service
from campaigns.services import periods as period_service
from campaigns.services import versions as version_service

INT_CURSOR = re.compile(r"\d{1,18}")
SNAPSHOT_CURSOR = re.compile(r"(\d{1,18})\.(\d{1,18})(?:\.(\d{1,9}))?")  # period.segment[.wave]


def _int_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not INT_CURSOR.fullmatch(cursor):
        raise InvalidInput("cursor", "not a cursor of this list (use the X-Next-Cursor of the previous page)")
    return min(int(cursor), INT_MAX)  # past every id (INTEGER columns): the end, never an overflow


def _split(rows: list, limit: int, key) -> tuple[list, str | None]:
    """`rows` were read with limit + 1: the extra one only says that a next page exists."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, key(rows[-1])


def segments(session: Session, limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
    rows, nxt = _split(repo.segments(session, _int_cursor(cursor), limit + 1), limit, lambda s: str(s.id))
    counts = repo.customers_per_segment(session, [s.id for s in rows])
    page = [{"id": s.id, "name": s.name, "description": s.description, "customers": counts.get(s.id, 0)}
            for s in rows]
    return page, nxt


def campaigns(session: Session, limit: int, cursor: str | None, offset: int = 0) -> tuple[list[dict], str | None]:
    rows = repo.campaigns(session, _int_cursor(cursor), offset, limit + 1)
    rows, nxt = _split(rows, limit, lambda c: str(c.id))
    return [campaign_service.to_public(session, c) for c in rows], nxt


def variants(session: Session, campaign_id: int, limit: int, cursor: str | None) -> tuple[list, str | None]:
    campaign_service.get(session, campaign_id)
    rows = repo.variants(session, campaign_id, _int_cursor(cursor), limit + 1)
    return _split(rows, limit, lambda v: str(v.arm))


def periods(session: Session, campaign_id: int, limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
    campaign_service.get(session, campaign_id)
    rows = repo.periods(session, campaign_id, _int_cursor(cursor), limit + 1)
    rows, nxt = _split(rows, limit, lambda p: str(p.number))
    return [period_service.public(session, p) for p in rows], nxt  # only in-flight ones cost queries


def snapshots(session: Session, campaign_id: int, limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
    campaign_service.get(session, campaign_id)
    after = None
    if cursor is not None:
        m = SNAPSHOT_CURSOR.fullmatch(cursor)
        if m is None:
            raise InvalidInput("cursor", "not a cursor of this list (use the X-Next-Cursor of the previous page)")
        after = (min(int(m[1]), INT_MAX), min(int(m[2]), INT_MAX), min(int(m[3] or 1), INT_MAX))
    rows = repo.snapshots(session, campaign_id, after, limit + 1)
    rows, nxt = _split(rows, limit, lambda r: f"{r[0].version}.{r[0].segment_id}.{r[0].wave}")
    return [{**snap.model_dump(), "period_number": snap.version, "segment": name} for snap, name in rows], nxt


def versions(session: Session, campaign_id: int, limit: int, cursor: str | None) -> tuple[dict, str | None]:
    """The segments' current modes in full and one page of the timeline. The modes need every
    action, so this reads the whole timeline (manual actions: few, and rate-limited) and bounds
    the response, not the read."""
    after = _int_cursor(cursor)
    body = version_service.versions(session, campaign_id)
    timeline = [a for a in body["timeline"] if after is None or a["id"] > after]
    timeline, nxt = _split(timeline, limit, lambda a: str(a["id"]))
    return {**body, "timeline": timeline}, nxt
