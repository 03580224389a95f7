"""What the API enforces, stated in its OpenAPI document, so a schema-driven client (or fuzzer)
and the API agree on which requests are valid.

pydantic leaves some rules out of the JSON Schema it generates, or writes them in its own words:
bounds on a number that first goes through a validator come out as `ge`/`le` (which JSON Schema
ignores, so `holdout_share: 512` looked valid); the NUL check of every request body (PostgreSQL text
cannot hold one) and the rules the models check in Python ("exactly one of `arm` or
`variant_key`", factor names and levels) are not there at all. They are added here. What JSON Schema
cannot say (a segment or customer that must exist, a template that must compile, `until` after
`since`) stays a 422 naming the field.
"""

from fastapi import FastAPI

from api import openapi_doc
from campaigns import schemas

BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}
NO_NUL = "^[^\\u0000]*$"
HTTP_URL = "^[Hh][Tt][Tt][Pp][Ss]?://[^\\u0000\\s/?#][^\\u0000]*$"
# The rules each model checks in Python, as JSON Schema (keep in step with campaigns/schemas.py and
# campaigns/design.py; tests/api/test_openapi_rules.py holds them to what the API does).
MODEL_RULES = {
    "PromoteIn": {"oneOf": [
        {"required": ["arm"], "properties": {"arm": {"type": "integer"}}},
        {"required": ["variant_key"], "properties": {"variant_key": {"type": "string"}}},
    ]},
    "RollbackIn": {"oneOf": [
        {"required": ["to_period"], "properties": {"to_period": {"type": "integer"}}},
        {"required": ["to"], "properties": {"to": {"const": "uniform"}}},
    ]},
}
FACTORS = {  # campaigns.design.validate_factors
    "minProperties": 1,
    "propertyNames": {"pattern": "^[a-z_][a-z0-9_]*$"},
    "additionalProperties": {"type": "array", "minItems": 1, "uniqueItems": True,
                             "items": {"type": "string", "pattern": "\\S"}},
}


def _standard_bounds(node) -> None:
    if isinstance(node, dict):
        if node.get("type") in ("number", "integer"):
            for theirs, ours in BOUNDS.items():
                if theirs in node:
                    node.setdefault(ours, node.pop(theirs))
        for value in node.values():
            _standard_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _standard_bounds(value)


def _no_nul(node) -> None:
    """Every string of a request body, and every key of its objects, without NUL."""
    if isinstance(node, list):
        for value in node:
            _no_nul(value)
        return
    if not isinstance(node, dict) or "$ref" in node:
        return
    if node.get("type") == "string" and "enum" not in node and "const" not in node:
        pattern = node.get("pattern")
        if node.get("format") == "uri" and pattern is None:  # pydantic's HttpUrl: http(s), then a host
            node["pattern"] = HTTP_URL
        elif pattern is None:
            node["pattern"] = NO_NUL
        elif "\\u0000" not in pattern:  # only negated classes and literals in ours: exclude NUL from each
            node["pattern"] = pattern.replace("[^", "[^\\u0000")
    if node.get("type") == "object" and node.get("additionalProperties", False) is not False:
        node.setdefault("propertyNames", {"pattern": NO_NUL})
    for key, value in node.items():
        if key not in ("enum", "const", "default", "examples", "example"):
            _no_nul(value)


def _strict_models() -> set[str]:
    found, todo = set(), [schemas.Strict]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.add(sub.__name__)
            todo.append(sub)
    return found


def install(app: FastAPI) -> None:
    def amend(document: dict) -> None:
        _standard_bounds(document)
        components = document.get("components", {}).get("schemas", {})
        for name in _strict_models() & set(components):
            _no_nul(components[name])
            components[name].update(MODEL_RULES.get(name, {}))
        if "CampaignCreate" in components:
            components["CampaignCreate"]["properties"]["factors"].update(FACTORS)
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                csv = operation.get("requestBody", {}).get("content", {}).get("text/csv")
                if csv is not None:
                    csv["schema"] = {**csv.get("schema", {}), "minLength": 1}

    openapi_doc.amend(app, amend)
