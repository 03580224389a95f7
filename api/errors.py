"""One error shape for every failure: {"error": code, "detail": message or [{loc, msg}]}."""

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from campaigns.errors import DomainError

CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed", 409: "conflict"}


def _loc(parts) -> str:
    """('body', 'factors', 'tone', 0) -> 'factors.tone[0]' (the field as the client wrote it)."""
    out = ""
    for p in parts:
        if p == "body" and not out:
            continue
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError):
        return JSONResponse({"error": exc.code, "detail": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError):
        detail = [{"loc": _loc(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        return JSONResponse({"error": "invalid_input", "detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException):
        code = CODES.get(exc.status_code, "error")
        return JSONResponse(
            {"error": code, "detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )
