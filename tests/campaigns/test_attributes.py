"""Typed attributes: the CSV inference rules and what templates see (pure code)."""

from datetime import date

import pytest

from campaigns import attributes


def infer(column: list[str]) -> str:
    types = attributes.ColumnTypes({})
    for v in column:
        types.see("c", v)
    return types.result()["c"]


@pytest.mark.parametrize(("column", "kind"), [
    (["1", "-20", "+3"], "int"),
    (["1", "2.5"], "decimal"),
    (["1e3", ".5"], "decimal"),
    (["true", "No", "YES"], "bool"),
    (["2026-01-31", "2025-02-28"], "date"),
    (["2026-02-30"], "text"),  # not a calendar date
    (["01234", "75001"], "text"),  # a leading zero keeps a postcode text
    (["1", "x"], "text"),
    (["0", "1"], "int"),  # 0/1 are numbers, not booleans
    (["nan"], "text"),
])
def test_inference_picks_the_narrowest_type_every_value_fits(column, kind):
    assert infer(column) == kind


def test_annotation_overrides_inference_and_unknown_annotation_is_refused():
    names, annotated = attributes.parse_header(["external_id", "zip:int", "points:decimal", "code:str"])
    assert names == ["external_id", "zip", "points", "code"]
    assert annotated == {"zip": "int", "points": "decimal", "code": "text"}
    types = attributes.ColumnTypes(annotated)
    types.see("code", "12")
    assert types.result()["code"] == "text"
    with pytest.raises(ValueError, match="unknown type 'money'"):
        attributes.parse_header(["points:money"])


def test_convert_and_template_values():
    assert attributes.convert("int", "-7") == -7 and attributes.convert("bool", "Yes") is True
    assert attributes.convert("decimal", "2.50") == 2.5
    seen = attributes.template_values({"since": "2026-03-01", "n": 3, "t": "2026-03-01 and more"})
    assert seen == {"since": date(2026, 3, 1), "n": 3, "t": "2026-03-01 and more"}


def test_shape_names_keys_and_types():
    assert attributes.shape({"b": 1, "a": "x", "d": "2026-01-01", "f": True}) == (
        ("a", "text"), ("b", "int"), ("d", "date"), ("f", "bool"))
