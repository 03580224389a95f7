"""The signed conversion webhook: who may post is proven by an HMAC over the timestamp and the raw body.

    X-MAB-Timestamp: <unix seconds>
    X-MAB-Signature: sha256=<hex of HMAC-SHA256(secret, b"<timestamp>." + raw body)>

The timestamp must be within MAB_WEBHOOK_TOLERANCE_SECONDS of the server's clock (either way), so a
captured request stops working after a few minutes; within that window a signature is accepted once.
Seen signatures live in Redis (SET NX EX): the check is one atomic round trip shared by every API
process, the key expires by itself when the signature could no longer pass the timestamp check, and
Redis is already on the path of every accepted event (the queue), so it adds no new way to fail. A
database table would need its own clean-up and a write per request on the database everyone shares.

Every secret of MAB_WEBHOOK_SECRETS verifies and the first one signs, so a secret rotates without
downtime: add the new secret first, switch the sender to it, then remove the old one.
"""

import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from functools import lru_cache

import redis
from pydantic import ValidationError

from campaigns.errors import BodyTooLarge, InvalidInput, Unauthorized, Unavailable
from campaigns.models import EventType
from campaigns.schemas import EventsIn
from campaigns.services import events
from campaigns.settings import get_settings

TIMESTAMP_HEADER = "X-MAB-Timestamp"
SIGNATURE_HEADER = "X-MAB-Signature"
REPLAY_PREFIX = "mab:webhook:seen:"


def secrets() -> list[str]:
    return [s.strip() for s in get_settings().webhook_secrets.split(",") if s.strip()]


def signature(secret: str, timestamp: str | int, body: bytes) -> str:
    """The X-MAB-Signature value for a body sent at `timestamp` (what a sender computes)."""
    return "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(body: bytes, timestamp: int | None = None, secret: str | None = None) -> dict[str, str]:
    """Headers for a webhook request, signed with the first configured secret unless one is given."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: signature(secret or secrets()[0], ts, body)}


@lru_cache
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def _replay_store() -> redis.Redis:
    return _redis(get_settings().broker_url())


def verify(timestamp: str | None, sig: str | None, body: bytes, now: float | None = None) -> str:
    """Check a request's headers against its raw body; returns the replay key to claim. Raises
    Unauthorized with the reason. The signature is compared in constant time against every secret."""
    settings = get_settings()
    keys = secrets()
    if not timestamp or not sig:  # a request without them is refused alike whether the webhook is on or off
        raise Unauthorized(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    if not keys:
        raise Unavailable("the conversion webhook is not configured (set MAB_WEBHOOK_SECRETS)")
    try:
        ts = int(timestamp)
    except ValueError:
        raise Unauthorized(f"{TIMESTAMP_HEADER} must be unix seconds") from None
    now = time.time() if now is None else now
    if abs(now - ts) > settings.webhook_tolerance_seconds:
        raise Unauthorized(
            f"stale or future {TIMESTAMP_HEADER} (more than {settings.webhook_tolerance_seconds} s from now)"
        )
    # no short circuit: every secret is tried, so timing does not tell which one matched
    matches = [hmac.compare_digest(signature(k, timestamp, body).encode(), sig.strip().encode()) for k in keys]
    if not any(matches):
        raise Unauthorized("bad signature")
    return REPLAY_PREFIX + hashlib.sha256(sig.strip().encode()).hexdigest()


def claim(replay_key: str) -> None:
    """Accept a signature once. The key outlives the last moment the signature could still pass the
    timestamp check (a timestamp up to `tolerance` ahead stays valid until 2 × tolerance from now)."""
    ttl = 2 * get_settings().webhook_tolerance_seconds + 60
    try:
        fresh = _replay_store().set(replay_key, b"1", nx=True, ex=ttl)
    except redis.RedisError as exc:
        raise Unavailable(f"the replay check is unavailable, retry later ({type(exc).__name__})") from exc
    if not fresh:
        raise Unauthorized("replayed request: this signature was already used")


def release(replay_key: str) -> None:
    """Forget a claimed signature when nothing was accepted, so the sender may retry the same request."""
    try:
        _replay_store().delete(replay_key)
    except redis.RedisError:
        pass  # the sender then re-signs with a new timestamp; nothing was accepted either way


def parse(body: bytes) -> EventsIn:
    """The body as a conversion batch, checked like POST /events (422 naming the event)."""
    try:
        batch = EventsIn.model_validate_json(body)
    except ValidationError as exc:
        raise _invalid(exc) from None
    cap = get_settings().max_events_per_request
    if len(batch.events) > cap:
        raise InvalidInput("events", f"{len(batch.events)} events exceed the cap of {cap} per request")
    for i, e in enumerate(batch.events):
        if e.type != EventType.CONVERSION:
            raise InvalidInput(f"events[{i}].type", f"the conversion webhook takes conversions only, not '{e.type}'")
    events.validate_events(batch.events)
    return batch


def _invalid(exc: ValidationError) -> InvalidInput:
    """Every schema error in the API's shape: ('events', 0, 'revenue') -> 'events[0].revenue'."""
    detail = []
    for err in exc.errors():
        loc = ""
        for p in err["loc"]:
            loc += f"[{p}]" if isinstance(p, int) else (f".{p}" if loc else str(p))
        detail.append({"loc": loc or "body", "msg": err["msg"]})
    out = InvalidInput(detail[0]["loc"], detail[0]["msg"])
    out.detail = detail
    return out


async def read_body(chunks: AsyncIterator[bytes], declared_length: str | None) -> bytes:
    """The raw body (the signature covers its exact bytes), refused past MAB_WEBHOOK_MAX_BODY_BYTES
    before it is all read: nobody is authenticated yet."""
    cap = get_settings().webhook_max_body_bytes
    if declared_length and declared_length.isdigit() and int(declared_length) > cap:
        raise BodyTooLarge(f"the body exceeds {cap} bytes (MAB_WEBHOOK_MAX_BODY_BYTES)")
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > cap:
            raise BodyTooLarge(f"the body exceeds {cap} bytes (MAB_WEBHOOK_MAX_BODY_BYTES)")
    return bytes(body)


def receive_conversions(timestamp: str | None, sig: str | None, body: bytes) -> int:
    """Verify, refuse a replay, validate, enqueue. Returns the number of accepted events. The batch
    needs no lookup: events for unknown sends or campaigns are stored unattributed by the worker."""
    replay_key = verify(timestamp, sig, body)
    claim(replay_key)
    batch = parse(body)
    try:
        return events.enqueue(batch.events)
    except Unavailable:
        release(replay_key)
        raise
