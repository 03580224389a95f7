"""Every request gets an id: the client's `X-Request-ID` when it is a short plain token, else a new
random one. It is sent back in the `X-Request-ID` response header, bound to every log line of the
request (`request_id`) and stored with the request's audit entry, so one call can be followed from the
client through the logs to the audit log."""

import uuid

from campaigns.logging_config import bind_context, reset_context
from campaigns.services.audit import clean_request_id

HEADER = b"x-request-id"


class RequestId:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers", ()) if k == HEADER), b"")
        request_id = clean_request_id(given.decode("latin-1")) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        header = (HEADER, request_id.encode())

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        token = bind_context(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            reset_context(token)
