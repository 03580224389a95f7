"""Request metrics and the request log line, as a plain ASGI middleware (no body buffering, so
streamed exports and the click redirect pay only two clock reads, a counter and one log line).

Requests are labelled by route template (`/campaigns/{campaign_id}`), never by path: the series stay
few, and the signed tokens of /t/… and /u/… never reach a label or a log line.
"""

import logging
import time

from campaigns import metrics
from campaigns.logging_config import bind_context, reset_context
from campaigns.settings import get_settings

access_log = logging.getLogger("api.access")
UNMATCHED = "<unmatched>"


def route_template(scope, status: int) -> str:
    """The API route's template; `<unmatched>` for a 404 no route took, `<other>` for the app's own
    pages (/docs, /openapi.json), whose paths are not worth a series each."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if template:
        return template
    return UNMATCHED if status == 404 else "<other>"


class RequestObserver:
    def __init__(self, app):
        self.app = app
        self.log_requests = get_settings().log_requests

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]  # what an unhandled exception becomes (ServerErrorMiddleware answers it)

        async def send_and_watch(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        method = scope["method"]
        token = bind_context(method=method)
        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            seconds = time.perf_counter() - started
            route = route_template(scope, status[0])
            metrics.observe_http(method, route, status[0], seconds)
            if self.log_requests:
                campaign_id = (scope.get("path_params") or {}).get("campaign_id")
                access_log.info(
                    "%s %s %s %.1f ms", method, route, status[0], seconds * 1000,
                    extra={"route": route, "status": status[0], "duration_ms": round(seconds * 1000, 2),
                           "campaign_id": int(campaign_id) if str(campaign_id).isdigit() else None},
                )
            reset_context(token)
