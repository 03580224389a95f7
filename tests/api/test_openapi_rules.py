"""The OpenAPI document states what the API enforces (api/openapi_rules.py): checked against the
document here, and against the API by schemathesis in test_fuzz.py."""

import re

import jsonschema_rs
import pytest

from api.app import create_app

DOCUMENT = create_app().openapi()
SCHEMAS = DOCUMENT["components"]["schemas"]


def walk(node, path=""):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}/{i}")


def validator(name: str) -> jsonschema_rs.Draft202012Validator:
    return jsonschema_rs.Draft202012Validator({**SCHEMAS[name], "components": {"schemas": SCHEMAS}})


def test_number_bounds_are_json_schema_keywords():
    leftovers = [path for path, node in walk(DOCUMENT) if node.get("type") in ("number", "integer")
                 and {"ge", "le", "gt", "lt"} & set(node)]
    assert leftovers == []
    [bounded, _] = SCHEMAS["CampaignUpdate"]["properties"]["holdout_share"]["anyOf"]
    assert (bounded["minimum"], bounded["maximum"]) == (0.0, 0.5)


def test_no_request_string_admits_a_nul():
    strings = [(path, node) for path, node in walk(SCHEMAS["CustomersIn"]) if node.get("type") == "string"]
    strings += [(path, node) for path, node in walk(SCHEMAS["CustomerIn"]) if node.get("type") == "string"]
    assert strings
    for path, node in strings:
        assert not re.search(node["pattern"], "a\x00b"), path
        assert re.search(node["pattern"], "a@b.co"), path


@pytest.mark.parametrize(("body", "valid"), [
    ({"reason": "r", "arm": 1}, True),
    ({"reason": "r", "variant_key": "tone=a"}, True),
    ({"reason": "r", "arm": 1, "variant_key": "tone=a"}, False),
    ({"reason": "r"}, False),
    ({"reason": "r", "arm": None, "variant_key": None}, False),
])
def test_promote_needs_exactly_one_of_arm_and_variant_key(body, valid):
    assert validator("PromoteIn").is_valid(body) is valid


@pytest.mark.parametrize(("factors", "valid"), [
    ({"tone": ["a", "b"]}, True),
    ({}, False),
    ({"tone": []}, False),
    ({"Tone": ["a"]}, False),
    ({"tone": ["a", "a"]}, False),
    ({"tone": ["  "]}, False),
])
def test_factor_rules(factors, valid):
    schema = {**SCHEMAS["CampaignCreate"]["properties"]["factors"]}
    assert jsonschema_rs.Draft202012Validator(schema).is_valid(factors) is valid


def test_landing_urls_are_http():
    [url, _] = SCHEMAS["CampaignUpdate"]["properties"]["landing_url"]["anyOf"]
    assert re.search(url["pattern"], "https://example.com/x") and not re.search(url["pattern"], "k:")
