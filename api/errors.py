"""One error shape for every failure: {"error": code, "detail": message or [{loc, msg}]}."""

import math
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from api import openapi_doc
from campaigns.errors import DomainError
from campaigns.schemas import MAX_LISTED_PROBLEMS

CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed", 409: "conflict"}

# The one error shape, as the OpenAPI document states it (FastAPI's default 422 schema is not ours).
ERROR = {
    "type": "object", "required": ["error", "detail"],
    "properties": {"error": {"type": "string"}, "detail": {"description": "A message, or [{loc, msg}]."}},
}
INVALID = {
    "type": "object", "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "enum": ["invalid_input"]},
        "detail": {"type": "array", "items": {
            "type": "object", "required": ["loc", "msg"],
            "properties": {"loc": {"type": "string"}, "msg": {"type": "string"}},
        }},
    },
}
DOCUMENTED = {
    401: "No API key, or an unknown or revoked one",
    403: "The key's role may not do this",
    404: "Unknown id (or link)",
    409: "Conflicts with the object's state",
}


def _loc(parts) -> str:
    """('body', 'factors', 'tone', 0) -> 'factors.tone[0]' (the field as the client wrote it)."""
    out = ""
    for p in parts:
        if p == "body" and not out:
            continue
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def _allowed_methods(request: Request) -> set[str]:
    """The methods of this path as the OpenAPI document states them: one path can be several routes
    (GET and POST /u/{token}), and Starlette's own Allow names only the first route's. A template whose
    path parameters refuse this path (POST /campaigns/{campaign_id}/{action} for .../variants) is
    another resource, and so is a less specific template (GET /customers/{external_id} is not a
    method of /customers/csv)."""
    found: dict[int, set[str]] = {}
    for template, operations in request.app.openapi().get("paths", {}).items():
        match = compile_path(template)[0].match(request.scope["path"])
        if match and all(_fits(operations, name, value) for name, value in match.groupdict().items()):
            found.setdefault(len(match.groupdict()), set()).update(method.upper() for method in operations)
    return found[min(found)] if found else set()


def _fits(operations: dict, name: str, value: str) -> bool:
    for operation in operations.values():
        for p in operation.get("parameters", []):
            if p.get("in") != "path" or p.get("name") != name:
                continue
            schema = p.get("schema", {})
            if "enum" in schema and value not in schema["enum"]:
                return False
            if schema.get("type") == "integer":
                if not re.fullmatch(r"-?[0-9]+", value):
                    return False
                if not schema.get("minimum", -math.inf) <= int(value) <= schema.get("maximum", math.inf):
                    return False
    return True


def _document(app: FastAPI) -> None:
    """State the error responses in the OpenAPI document: the 422 in our shape, 401/403 where a key
    is checked, 404 where the path names an object, 409 on calls that change one."""
    def document(schema: dict) -> None:
        schema.setdefault("components", {}).setdefault("schemas", {}).update(Error=ERROR, InvalidInput=INVALID)
        for operations in schema.get("paths", {}).values():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                statuses = []
                if operation.get("security"):
                    statuses += [401, 403]
                if any(p.get("in") == "path" for p in operation.get("parameters", [])):
                    statuses.append(404)
                if method.upper() in ("POST", "PUT", "PATCH", "DELETE"):
                    statuses.append(409)
                for status in statuses:
                    responses.setdefault(str(status), {
                        "description": DOCUMENTED[status],
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
                for status, response in responses.items():
                    if status >= "4" and "content" not in response:
                        response["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                if "422" in responses or operation.get("parameters") or statuses:
                    responses["422"] = {"description": "Invalid input: `detail` names each bad field",
                                        "content": {"application/json": {
                                            "schema": {"$ref": "#/components/schemas/InvalidInput"}}}}
        for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's, now unused
            schema["components"]["schemas"].pop(name, None)

    openapi_doc.amend(app, document)


def install(app: FastAPI) -> None:
    _document(app)

    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError):
        return JSONResponse({"error": exc.code, "detail": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        if all(e["loc"][:1] == ("path",) for e in exc.errors()):
            # The path names another resource that lacks this method (POST /campaigns/1/variants
            # reaches the lifecycle route as action "variants"): a 405, as for any other path.
            allow = _allowed_methods(request)
            if allow and request.method not in allow:
                return JSONResponse({"error": "method_not_allowed", "detail": "Method Not Allowed"},
                                    status_code=405, headers={"Allow": ", ".join(sorted(allow))})
        # at most MAX_LISTED_PROBLEMS problems, then a count of the rest (a bulk list counts its own)
        errors = exc.errors()
        listed = [e for e in errors if e["type"] != "too_many_problems"]
        detail = [{"loc": _loc(e["loc"]), "msg": e["msg"]} for e in listed[:MAX_LISTED_PROBLEMS]]
        if len(listed) > MAX_LISTED_PROBLEMS:
            detail.append({"loc": "body", "msg": f"and {len(listed) - MAX_LISTED_PROBLEMS:,} more problems "
                                                 f"(the first {MAX_LISTED_PROBLEMS} are listed)"})
        detail += [{"loc": _loc(e["loc"]), "msg": e["msg"]} for e in errors if e["type"] == "too_many_problems"]
        return JSONResponse({"error": "invalid_input", "detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = CODES.get(exc.status_code, "error")
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": ", ".join(sorted(_allowed_methods(request)))}
        if exc.status_code == 400:  # Starlette's "error parsing the body" (e.g. JSON that is not UTF-8)
            return JSONResponse({"error": "invalid_input", "detail": [{"loc": "body", "msg": str(exc.detail)}]},
                                status_code=422)
        return JSONResponse({"error": code, "detail": exc.detail}, status_code=exc.status_code, headers=headers)
