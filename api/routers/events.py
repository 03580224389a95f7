import tempfile
from typing import Annotated

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from api import bodies
from api.deps import Ingest, SessionDep
from api.idempotency import IdempotencyDep, StreamedIdempotencyDep
from campaigns.errors import InvalidInput
from campaigns.schemas import EventsAccepted, EventsIn
from campaigns.services import customers, events
from campaigns.settings import get_settings

router = APIRouter(tags=["events"])

SPOOL_IN_MEMORY = 8 * 1024 * 1024  # larger uploads spill to a temporary file, never all in RAM
CSV_BODY = {"requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}, "required": True}}


@router.post("/events", status_code=202, response_model=EventsAccepted, dependencies=[Ingest],
             openapi_extra=bodies.documented(EventsIn))
def ingest_events(idem: IdempotencyDep, body: Annotated[EventsIn, bodies.bulk_body(EventsIn)]):
    """Clicks and conversions in bulk. Checked here, queued through Redis, folded in by a worker;
    an event id delivered many times counts once."""
    cap = get_settings().max_events_per_request
    if len(body.events) > cap:
        raise InvalidInput("events", f"{len(body.events)} events exceed the cap of {cap} per request")
    events.validate_events(body.events)
    return idem.respond({"accepted": events.enqueue(body.events)}, 202)


@router.post("/events/conversions.csv", status_code=202, response_model=EventsAccepted, dependencies=[Ingest],
             openapi_extra=CSV_BODY)
async def import_conversions_csv(request: Request, session: SessionDep, idem: StreamedIdempotencyDep):
    """Offline conversions, streamed: header `event_id,campaign_id,customer_external_id,revenue,occurred_at`.
    A bad row refuses the whole file (422 naming its line) and nothing is queued."""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
        await idem.spool(request.stream(), spool)  # hashes the body for an Idempotency-Key on the way

        def lines():
            spool.seek(0)
            return customers.decode_lines(iter(lambda: spool.read(1 << 16), b""))

        accepted = await run_in_threadpool(events.import_conversions_csv, session, lines)
    return await idem.arespond({"accepted": accepted}, 202)
