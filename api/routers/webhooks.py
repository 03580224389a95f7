"""Signed webhooks from other systems: no API key, the HMAC signature is the authentication."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.deps import SessionDep
from campaigns.schemas import EventsAccepted
from campaigns.services import esp_postmark, esp_sendgrid, esp_ses, esp_webhooks, webhooks

router = APIRouter(tags=["webhooks"])

SIGNED_BODY = {
    "parameters": [
        {"name": webhooks.TIMESTAMP_HEADER, "in": "header", "required": True, "schema": {"type": "string"},
         "description": "Unix seconds; refused when more than MAB_WEBHOOK_TOLERANCE_SECONDS away."},
        {"name": webhooks.SIGNATURE_HEADER, "in": "header", "required": True, "schema": {"type": "string"},
         "description": 'sha256=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>'},
    ],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EventsIn"}}},
    },
}


@router.post("/webhooks/conversions", status_code=202, response_model=EventsAccepted, openapi_extra=SIGNED_BODY,
             responses={401: {"description": "Signature missing, wrong, stale or replayed"},
                        503: {"description": "The webhook is off (MAB_WEBHOOK_SECRETS is empty)"}})
async def conversion_webhook(request: Request):
    """Conversions pushed by a shop or POS: `{"events": [...]}` as in POST /events, conversions only.
    401 when the signature is missing, wrong, stale or replayed; 422 on bad events; 202 when queued."""
    body = await webhooks.read_body(request.stream(), request.headers.get("content-length"))
    accepted = await run_in_threadpool(
        webhooks.receive_conversions,
        request.headers.get(webhooks.TIMESTAMP_HEADER),
        request.headers.get(webhooks.SIGNATURE_HEADER),
        body,
    )
    return JSONResponse({"accepted": accepted}, status_code=202)


@router.post("/webhooks/esp/mailgun", responses={401: {"description": "Signature missing, wrong, stale or replayed"},
                                                  503: {"description": "Off: MAB_MAILGUN_SIGNING_KEY is empty"}})
async def mailgun_webhook(request: Request, session: SessionDep):
    """Mailgun's event webhook (bounces, complaints), verified by its HMAC signature. 200 with what was
    recorded; an event about no send of ours is acknowledged and counted as unmatched."""
    body = await webhooks.read_body(request.stream(), request.headers.get("content-length"))
    outcome = await run_in_threadpool(esp_webhooks.receive_mailgun, session, body)
    return {"outcome": outcome}


ESP_RESPONSES = {401: {"description": "Signature or credentials missing, wrong, stale or replayed"},
                 503: {"description": "Off: the ESP's setting is empty"}}


@router.post("/webhooks/esp/sendgrid", responses=ESP_RESPONSES)
async def sendgrid_webhook(request: Request, session: SessionDep):
    """SendGrid's Event Webhook (bounces, drops, spam reports, unsubscribes, deliveries), verified by its
    ECDSA signature. 200 with what happened to each event (`outcomes`)."""
    body = await webhooks.read_body(request.stream(), request.headers.get("content-length"))
    outcomes = await run_in_threadpool(esp_sendgrid.receive, session, body,
                                       request.headers.get(esp_sendgrid.SIGNATURE),
                                       request.headers.get(esp_sendgrid.TIMESTAMP))
    return {"outcomes": outcomes}


@router.post("/webhooks/esp/ses", responses=ESP_RESPONSES)
async def ses_webhook(request: Request, session: SessionDep):
    """Amazon SES bounce, complaint and delivery notifications through SNS, verified by the SNS
    signature and the topic. 200 with what happened to each recipient (`outcomes`); a subscription
    confirmation is answered with the URL to open once."""
    body = await webhooks.read_body(request.stream(), request.headers.get("content-length"))
    return {"outcomes": await run_in_threadpool(esp_ses.receive, session, body)}


@router.post("/webhooks/esp/postmark", responses=ESP_RESPONSES)
async def postmark_webhook(request: Request, session: SessionDep):
    """Postmark's bounce, spam complaint, subscription change and delivery webhooks, authenticated by
    the basic auth of the webhook's URL. 200 with what happened (`outcomes`)."""
    body = await webhooks.read_body(request.stream(), request.headers.get("content-length"))
    outcomes = await run_in_threadpool(esp_postmark.receive, session, body, request.headers.get("authorization"))
    return {"outcomes": outcomes}
