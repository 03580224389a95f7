"""Bulk JSON bodies, parsed and validated off the event loop.

FastAPI parses and validates a route's body model on the event loop, before the route runs in its
thread: a 10 MB import of 90,000 customers holds the loop for seconds, and every other request of
the process (health checks, clicks) waits behind it. The bulk routes take their body through
`bulk_body(Model)` instead: the bytes are read on the loop (I/O), the JSON is parsed and validated
in a worker thread, and a bad body is the same 422 as before (`RequestValidationError`, locations
under `body`). `documented(Model)` keeps the body in the OpenAPI document, and `install` registers
the models there.
"""

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool

from api import openapi_doc

REF = "#/components/schemas/{model}"
_MODELS: list[type[BaseModel]] = []


def bulk_body(model: type[BaseModel]):
    """A dependency that returns the request's body as `model`, validated in a worker thread."""
    _MODELS.append(model)

    async def parse(request: Request) -> BaseModel:
        raw = await request.body()
        try:
            return await run_in_threadpool(model.model_validate_json, raw)
        except ValidationError as exc:
            errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
            raise RequestValidationError(errors) from None

    return Depends(parse)


def documented(model: type[BaseModel]) -> dict:
    """`openapi_extra` of a route whose body `bulk_body(model)` reads."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}}}}


def install(app: FastAPI) -> None:
    """Put the bulk bodies' models into the document's components, where FastAPI would have put them."""
    def amend(document: dict) -> None:
        _, schemas = models_json_schema([(m, "validation") for m in _MODELS], ref_template=REF)
        components = document.setdefault("components", {}).setdefault("schemas", {})
        for name, schema in schemas.get("$defs", {}).items():
            components.setdefault(name, _without_null_defaults(schema))

    openapi_doc.amend(app, amend)


def _without_null_defaults(node):
    """pydantic writes `"default": null` for optional fields; FastAPI's document leaves it out."""
    if isinstance(node, dict):
        return {k: _without_null_defaults(v) for k, v in node.items() if not (k == "default" and v is None)}
    if isinstance(node, list):
        return [_without_null_defaults(v) for v in node]
    return node
