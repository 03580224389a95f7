"""The `Idempotency-Key` header of campaign creation, period triggers and bulk imports.

A route takes `IdempotencyDep` (JSON bodies: the dependency hashes the raw body FastAPI already read)
or `StreamedIdempotencyDep` (CSV bodies: the route spools the stream through `idem.spool`, which
hashes it on the way), and answers through `idem.respond(content, status)`, which renders the
response with the route's response model and, when a key was sent, records it in the request's
transaction (see campaigns/services/idempotency.py). A replay is raised as `Replay` from the
dependency (or from `spool`) and answered by the handler `install` registers: the route never runs.
"""

import json
import logging
import threading
import time
from functools import lru_cache
from typing import Annotated, Any

from fastapi import BackgroundTasks, Depends, FastAPI, Header, Request
from fastapi.responses import Response
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentKey, SessionDep
from campaigns.db import session_scope
from campaigns.models import ApiKey
from campaigns.services import idempotency as service

log = logging.getLogger(__name__)

REPLAYED = "Idempotent-Replayed"
RECORDED_HEADERS = ("content-type", "location")
PURGE_EVERY_SECONDS = 600.0

KeyHeader = Annotated[str | None, Header(
    alias=service.HEADER,
    # Documented, checked by the service (its 422 names the header). No space at either end: HTTP strips them.
    json_schema_extra={"pattern": r"^[!-~]([ -~]{0,253}[!-~])?$"},
    description="Optional, 1–255 printable ASCII characters (e.g. a UUID). The same key and the same "
    "request from this API key within 24 h get the first response again (with `Idempotent-Replayed: true`), "
    "and the work is done once; the same key with another request is refused (422).",
)]


class Replay(Exception):  # noqa: N818 (a control-flow signal, not an error)
    def __init__(self, stored: service.Stored):
        self.stored = stored


@lru_cache(maxsize=64)
def _adapter(model: Any) -> TypeAdapter:
    return TypeAdapter(model)


class Idempotency:
    """One request's handle: its key (or None) and, once claimed, the row its response goes to."""

    def __init__(self, request: Request, session, api_key: ApiKey, key: str | None):
        self.request = request
        self.session = session
        self.api_key_id = api_key.id
        self.key = None if key is None else service.check_key(key)
        self.claimed: service.Claimed | None = None

    def hasher(self):
        return service.request_hasher(self.request.method, self.request.url.path, self.request.url.query)

    async def begin(self, request_hash: str) -> None:
        if self.key is None:
            return
        outcome = await run_in_threadpool(service.begin, self.session, self.api_key_id, self.key, request_hash)
        if isinstance(outcome, service.Stored):
            raise Replay(outcome)
        self.claimed = outcome

    async def spool(self, stream, file) -> None:
        """Copy the streamed body into `file`, hashing it on the way when the request has a key, then
        claim (or replay) the key."""
        h = self.hasher() if self.key is not None else None
        async for chunk in stream:
            file.write(chunk)
            if h is not None:
                h.update(chunk)
        if h is not None:
            await self.begin(h.hexdigest())

    def render(self, content: Any) -> bytes:
        model = getattr(self.request.scope.get("route"), "response_model", None)
        if model is not None:
            adapter = _adapter(model)
            content = adapter.dump_python(adapter.validate_python(content, from_attributes=True), mode="json")
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()

    def respond(self, content: Any, status_code: int = 200) -> Response:
        """The response, recorded with the work (same transaction) when the request carried a key."""
        body = self.render(content)
        response = Response(body, status_code=status_code, media_type="application/json")
        if self.claimed is not None:
            headers = {k: v for k, v in response.headers.items() if k in RECORDED_HEADERS}
            service.record(self.session, self.claimed, status_code, body, headers)
        return response

    async def arespond(self, content: Any, status_code: int = 200) -> Response:
        return await run_in_threadpool(self.respond, content, status_code)


_purge_lock = threading.Lock()
_next_purge = [0.0]


def _purge_expired() -> None:
    try:
        with session_scope() as session:
            service.purge_expired(session)
    except Exception:  # housekeeping after the response: the next purge tries again
        log.warning("purging expired idempotency keys failed", exc_info=True)


def _schedule_purge(background: BackgroundTasks) -> None:
    """Forget expired keys now and then (at most every 10 minutes per process), after a response."""
    now = time.monotonic()
    with _purge_lock:
        if now < _next_purge[0]:
            return
        _next_purge[0] = now + PURGE_EVERY_SECONDS
    background.add_task(_purge_expired)


async def json_idempotency(request: Request, session: SessionDep, api_key: CurrentKey,
                           background: BackgroundTasks, key: KeyHeader = None) -> Idempotency:
    idem = Idempotency(request, session, api_key, key)
    if idem.key is not None:
        _schedule_purge(background)
        h = idem.hasher()
        h.update(await request.body())
        await idem.begin(h.hexdigest())
    return idem


async def streamed_idempotency(request: Request, session: SessionDep, api_key: CurrentKey,
                               background: BackgroundTasks, key: KeyHeader = None) -> Idempotency:
    idem = Idempotency(request, session, api_key, key)
    if idem.key is not None:
        _schedule_purge(background)
    return idem


IdempotencyDep = Annotated[Idempotency, Depends(json_idempotency)]
StreamedIdempotencyDep = Annotated[Idempotency, Depends(streamed_idempotency)]


def install(app: FastAPI) -> None:
    @app.exception_handler(Replay)
    async def replay(_: Request, exc: Replay):
        stored = exc.stored
        return Response(stored.body.encode(), status_code=stored.status, headers={**stored.headers, REPLAYED: "true"})
