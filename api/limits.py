"""Bounds at the edge, as plain ASGI middleware (nothing buffered; a refused request is answered
before its body is read):

- `RateLimit`: requests per minute per API key on ingestion (POST /events, /events/conversions.csv)
  and on every other mutating route, and per source IP on the conversion webhook. Counted in Redis,
  so the limit holds across every API process and machine. 429 `rate_limited` with Retry-After.
- `BodySizeLimit`: MAB_MAX_BODY_BYTES per request body (MAB_MAX_CSV_BYTES for the two CSV imports),
  from Content-Length when the client declares it, else counted while the body streams in. 413.

Links inside emails (/t/…, /u/…) are never limited: a mail gateway opening every link of a
newsletter from one address must not cost a real reader their unsubscribe.
"""

import asyncio
import hashlib
import logging
import math
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from api import openapi_doc
from campaigns.settings import get_settings

log = logging.getLogger(__name__)

INGEST_PATHS = frozenset({"/events", "/events/conversions.csv"})
WEBHOOK_PATHS = frozenset({"/webhooks/conversions"})
CSV_PATHS = frozenset({"/customers/csv", "/events/conversions.csv"})
EXEMPT_PREFIXES = ("/t/", "/u/")
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LABELS = {"ingest": "ingestion", "mutations": "mutating", "webhook": "webhook"}
WINDOW_MS = 60_000
SKIP_AFTER_ERROR = 5.0  # seconds without asking Redis after it failed (fail open: docs/reference/errors.md)
WARN_EVERY = 60.0

# A fixed one-minute window per (bucket, caller): one atomic INCR, and the first request of a window
# sets its expiry. Returns the count so far and the window's remaining milliseconds.
WINDOW_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""


def error(status: int, code: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def _client_ip(scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


def bucket(scope) -> tuple[str, int, str] | None:
    """(bucket name, requests per minute, caller) of a request, or None when it is not limited."""
    method, path = scope["method"], scope["path"]
    if method not in MUTATING or path.startswith(EXEMPT_PREFIXES):
        return None
    s = get_settings()
    if path in WEBHOOK_PATHS:
        return "webhook", s.rate_limit_webhook_per_minute, f"ip:{_client_ip(scope)}"
    name, limit = ("ingest", s.rate_limit_ingest_per_minute) if path in INGEST_PATHS else (
        "mutations", s.rate_limit_mutations_per_minute)
    # The key itself is checked later, by the route; here it only names the caller. Its hash, never
    # the key, goes to Redis. Without a key the request will be a 401: it is counted by address.
    key = Headers(scope=scope).get("x-api-key")
    caller = "key:" + hashlib.sha256(key.encode()).hexdigest()[:32] if key else f"ip:{_client_ip(scope)}"
    return name, limit, caller


class RateLimit:
    def __init__(self, app):
        self.app = app
        self._client: tuple[asyncio.AbstractEventLoop, str, object] | None = None
        self._skip_until = 0.0
        self._warned_at = -WARN_EVERY

    def _script(self):
        """One Redis client per event loop (uvicorn has one; every TestClient its own)."""
        loop = asyncio.get_running_loop()
        settings = get_settings()
        url, timeout = settings.broker_url(), settings.rate_limit_redis_timeout_seconds
        # A hung Redis costs a request `timeout` seconds, at most once per SKIP_AFTER_ERROR.
        if self._client is None or self._client[0] is not loop or self._client[1] != (url, timeout):
            client = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
            self._client = (loop, (url, timeout), client.register_script(WINDOW_SCRIPT))
        return self._client[2]

    async def count(self, name: str, caller: str) -> tuple[int, int] | None:
        """(requests in this window, milliseconds left), or None when Redis cannot say: then the
        request goes through (fail open) and a warning is logged at most once a minute."""
        now = time.monotonic()
        if now < self._skip_until:
            return None
        try:
            n, ttl = await self._script()(keys=[f"mab:ratelimit:{name}:{caller}"], args=[WINDOW_MS])
            return int(n), int(ttl)
        except (TimeoutError, RedisError, OSError) as exc:
            self._skip_until = now + SKIP_AFTER_ERROR
            if now - self._warned_at >= WARN_EVERY:
                self._warned_at = now
                log.warning("rate limits off for now: Redis did not answer (%s)", type(exc).__name__)
            return None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and (found := bucket(scope)) is not None and found[1] > 0:
            name, limit, caller = found
            counted = await self.count(name, caller)
            if counted is not None and counted[0] > limit:
                retry_after = max(1, math.ceil(counted[1] / 1000))
                what = "per source address" if name == "webhook" else "per API key"
                response = error(429, "rate_limited", f"more than {limit} {LABELS[name]} requests per minute {what}: "
                                 f"retry in {retry_after} s",
                                 headers={"Retry-After": str(retry_after)})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _BodyTooLarge(HTTPException):
    """Raised from `receive` once the body passes the cap. An HTTPException, so FastAPI's body
    parsing lets it through instead of turning it into a 400; the middleware answers 413 anyway."""

    def __init__(self) -> None:
        super().__init__(413, "request body too large")


class BodySizeLimit:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        s = get_settings()
        cap, setting = (s.max_csv_bytes, "MAB_MAX_CSV_BYTES") if scope["path"] in CSV_PATHS else (
            s.max_body_bytes, "MAB_MAX_BODY_BYTES")
        too_large = error(413, "too_large", f"the request body exceeds {cap} bytes ({setting})")
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            await too_large(scope, receive, send)
            return

        received = 0
        tripped = started = replaced = False

        async def limited_receive():
            nonlocal received, tripped
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    tripped = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message):
            nonlocal started, replaced
            if message["type"] == "http.response.start":
                started = True
                if tripped:  # whatever the app made of the exception, the answer is a 413
                    replaced = True
                    await too_large(scope, receive, send)
                    return
            elif replaced:
                return  # the body of the response replaced above
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not tripped:
                raise
            if not started:
                await too_large(scope, receive, send)


ERROR_SCHEMA = {"type": "object", "required": ["error", "detail"],
                "properties": {"error": {"type": "string"}, "detail": {}}}


PAGE_HEADERS = {
    "X-Next-Cursor": {"schema": {"type": "string"},
                      "description": "The `cursor` of the next page (absent on the last)."},
    "Link": {"schema": {"type": "string"},
             "description": 'The next page\'s URL, `<…>; rel="next"` (absent on the last).'},
}


def document_limits(app) -> None:
    """Add the 413 and 429 these middlewares may answer to each mutating operation of the app's
    OpenAPI document (the middlewares are not routes, so FastAPI cannot know of them)."""
    too_large = {"description": "Request body too large (MAB_MAX_BODY_BYTES, MAB_MAX_CSV_BYTES)",
                 "content": {"application/json": {"schema": ERROR_SCHEMA}}}
    limited = {"description": "Rate limited: retry after Retry-After seconds",
               "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}},
               "content": {"application/json": {"schema": ERROR_SCHEMA}}}
    def document(schema: dict) -> None:  # once: the document is cached on the app
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                if any(p.get("name") == "cursor" for p in operation.get("parameters", [])):
                    ok = operation.get("responses", {}).get("200")
                    if ok is not None:
                        ok.setdefault("headers", {}).update(PAGE_HEADERS)
                    for p in operation.get("parameters", []):
                        if p.get("name") == "limit":  # a setting, so the document states this service's value
                            p["schema"]["maximum"] = get_settings().max_page_size
                if method.upper() not in MUTATING:
                    continue
                responses = operation.setdefault("responses", {})
                responses.setdefault("413", too_large)
                if not path.startswith(EXEMPT_PREFIXES):
                    responses.setdefault("429", limited)

    openapi_doc.amend(app, document)
