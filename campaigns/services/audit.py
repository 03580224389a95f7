"""The audit log: who did what through the API, and who was refused.

What is recorded (one row per call, never a request or response body — they can hold personal data):

- every successful mutating call (POST, PUT, PATCH, DELETE) made with an API key, in the transaction
  of the work itself: a request that rolls back leaves no success entry, and a failed audit write
  fails the request;
- every successful read of one customer's personal data (GET /customers/{external_id}, its GDPR
  export, a period's assignment export with its emails);
- every refusal of a known key, whatever the method: 403 (its role may not) and 401 for a revoked
  key that is still in use. These are written in a transaction of their own (the request's rolls
  back). 401s without a key or with an unknown one are not: anyone can send them at no cost, so they
  would let anyone fill the table; they are in the request log and the HTTP metrics.

Not recorded: calls that failed for another reason (4xx/5xx: they changed nothing), and the routes
without an API key (clicks, unsubscribes, the signed webhook: they are the customers' own actions,
kept as events).

The object is named from the path (`campaign_id`, `key_id`; a customer by internal id, never by
external id, so an erased customer's identifier does not survive here), or for creations by the id
of the row the call created.
"""

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import event
from sqlmodel import Session

from campaigns.db import session_scope
from campaigns.errors import InvalidInput
from campaigns.models import ApiKey, AuditLog, as_utc
from campaigns.repositories import audit as repo
from campaigns.repositories import customers as customer_repo

log = logging.getLogger(__name__)

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Reads that hand out one customer's personal data, or a period's list of emails.
PERSONAL_READS = frozenset({
    ("GET", "/customers/{external_id}"),
    ("GET", "/customers/{external_id}/export"),
    ("GET", "/campaigns/{campaign_id}/periods/{number}/sends.csv"),
    ("GET", "/campaigns/{campaign_id}/periods/{number}/sends.parquet"),
    ("GET", "/campaigns/{campaign_id}/preview.html"),  # one customer's email, with their attributes
})
# Path parameters that name the call's object.
PATH_OBJECTS = {"campaign_id": "campaign", "key_id": "api_key", "external_id": "customer"}
# Path parameters with a few fixed values: part of the action ("POST /campaigns/{campaign_id}/start").
IN_ACTION = frozenset({"action"})
# The object type of a creation, by the path's first part.
CREATES = {"campaigns": "campaign", "api-keys": "api_key", "segments": "segment", "customers": "customer",
           "orders": "order", "events": "event"}
NOT_CREATED = frozenset({"audit_log", "idempotency_key"})  # bookkeeping, not the call's work
CREATED_SHOWN = 20  # ids listed per table in `detail.created`; more are counted
INT32 = 2**31 - 1
ACTION_WORD = re.compile(r"[a-z_]{1,32}")
PATH_VALUE_MAX = 64  # characters kept of another path parameter (a segment name, a period number)
REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
_CREATED = "audit_created"


@dataclass
class Call:
    method: str
    template: str  # the route's path template
    path_params: dict = field(default_factory=dict)
    request_id: str | None = None

    @property
    def action(self) -> str:
        path = self.template
        for name in IN_ACTION & self.path_params.keys():
            value = str(self.path_params[name])
            if ACTION_WORD.fullmatch(value):  # a refused call's path is not validated yet: no junk here
                path = path.replace("{" + name + "}", value)
        return f"{self.method} {path}"


def audits_success(method: str, template: str) -> bool:
    return method in MUTATING or (method, template) in PERSONAL_READS


def watch_creations(session: Session) -> None:
    """From now on, collect the ids of the rows this session creates (for the object of a creation)."""
    session.info[_CREATED] = {}


@event.listens_for(Session, "after_flush")
def _collect_created(session: Session, _context) -> None:
    created = session.info.get(_CREATED)
    if created is None:
        return
    for obj in session.new:
        table = getattr(obj, "__tablename__", None)
        ident = getattr(obj, "id", None)
        if table and ident is not None and table not in NOT_CREATED:
            created.setdefault(table, []).append(ident)


def _int(value) -> int | None:
    text = str(value)
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 10 and 0 < int(text) <= INT32 else None


def _describe(session: Session, call: Call, created: dict, override: tuple[str, int] | None):
    """(object type, object id, detail) of a call."""
    params = call.path_params
    detail: dict = {}
    extra = {k: str(v)[:PATH_VALUE_MAX] for k, v in params.items() if k not in PATH_OBJECTS and k not in IN_ACTION}
    if extra:
        detail["path"] = extra
    if created:
        detail["created"] = {t: ids[:CREATED_SHOWN] for t, ids in sorted(created.items())}
        counts = {t: len(ids) for t, ids in created.items() if len(ids) > CREATED_SHOWN}
        if counts:
            detail["created_count"] = counts
    if override is not None:
        return override[0], override[1], detail
    for name, kind in PATH_OBJECTS.items():
        if name in params:
            if name == "external_id":  # by internal id: the external one is personal data
                found = customer_repo.existing_customer_ids(session, [str(params[name])])
                return kind, found.get(str(params[name])), detail
            return kind, _int(params[name]), detail
    kind = CREATES.get(call.template.strip("/").split("/")[0])
    ids = created.get(kind, []) if kind else []
    return kind, ids[0] if len(ids) == 1 else None, detail


def _row(key: ApiKey | None, call: Call, status_code: int, outcome: str, described) -> AuditLog:
    object_type, object_id, detail = described
    return AuditLog(
        key_id=key.id if key else None, key_name=key.name if key else None, key_role=key.role if key else None,
        action=call.action, object_type=object_type, object_id=object_id, status_code=status_code,
        outcome=outcome, request_id=call.request_id, detail=detail,
    )


def record_success(
    session: Session, key: ApiKey, call: Call, status_code: int, override: tuple[str, int] | None = None
) -> None:
    """In the caller's transaction: committed with the work, or rolled back with it."""
    created = session.info.pop(_CREATED, None) or {}
    repo.insert(session, _row(key, call, status_code, "success", _describe(session, call, created, override)))


def record_refusal(key: ApiKey, call: Call, status_code: int, reason: str) -> None:
    """In a transaction of its own (the request's rolls back). Never turns the refusal into an error:
    a failed write is logged and the client still gets its 401/403."""
    try:
        with session_scope() as session:
            described = _describe(session, call, {}, None)
            described[2]["reason"] = reason
            repo.insert(session, _row(key, call, status_code, "refused", described))
    except Exception:
        log.exception("could not write the audit entry of a refused call", extra={"route": call.template})


def record_operator(session: Session, action: str, object_type: str, object_id: int, detail: dict) -> None:
    """An operator's command run on the server (`mab revoke-key`): no API key, in its transaction."""
    repo.insert(session, AuditLog(action=action, object_type=object_type, object_id=object_id, status_code=200,
                                  outcome="success", detail=detail))


def clean_request_id(value: str | None) -> str | None:
    """A client's X-Request-ID is kept when it is a short plain token (it goes into logs and here)."""
    return value if value and REQUEST_ID.fullmatch(value) else None


def public(row: AuditLog) -> dict:
    return {"id": row.id, "at": row.created_at, "key_id": row.key_id, "key_name": row.key_name,
            "key_role": row.key_role, "action": row.action, "object_type": row.object_type,
            "object_id": row.object_id, "status_code": row.status_code, "outcome": row.outcome,
            "request_id": row.request_id, "detail": row.detail}


def _utc(name: str, value: datetime | None) -> datetime | None:
    try:
        return None if value is None else as_utc(value)
    except OverflowError:  # 9999-12-31T23:59-14:00 is past the last representable UTC time
        raise InvalidInput(name, "out of range") from None


def entries(session: Session, filters: repo.Filters, limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
    """A page of entries, newest first, and the cursor of the next page (None: the last page)."""
    before = None
    if cursor is not None:
        # Any id-shaped cursor (the documented shape): one past the newest id reads from the start.
        before = int(cursor) if cursor.isascii() and cursor.isdigit() and len(cursor) <= 18 else None
        if before is None:
            raise InvalidInput("cursor", "not a cursor of this list (use the X-Next-Cursor of the previous page)")
    since, until = _utc("since", filters.since), _utc("until", filters.until)
    if since and until and since >= until:
        raise InvalidInput("until", "must be later than since")
    filters = repo.Filters(**{**filters.__dict__, "since": since, "until": until})
    rows = repo.page(session, filters, before, limit + 1)
    nxt = str(rows[limit - 1].id) if len(rows) > limit else None
    return [public(r) for r in rows[:limit]], nxt

