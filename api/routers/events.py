from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import Ingest, SessionDep
from campaigns.errors import InvalidInput
from campaigns.schemas import EventsAccepted, EventsIn
from campaigns.services import events
from campaigns.settings import get_settings

router = APIRouter(tags=["events"])


@router.post("/events", status_code=202, response_model=EventsAccepted, dependencies=[Ingest])
def ingest_events(body: EventsIn, session: SessionDep):
    """Clicks and conversions in bulk. Checked here, queued through Redis, folded in by a worker;
    an event id delivered many times counts once."""
    cap = get_settings().max_events_per_request
    if len(body.events) > cap:
        raise InvalidInput("events", f"{len(body.events)} events exceed the cap of {cap} per request")
    events.validate_events(session, body.events)
    return JSONResponse({"accepted": events.enqueue(body.events)}, status_code=202)
