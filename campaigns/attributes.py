"""Typed customer attributes: the CSV column types (inferred or annotated) and what templates see.

Attributes are stored as JSON: integers, decimals, booleans and text keep their JSON types. A date
has no JSON type, so it is stored as its ISO text (`2026-03-01`) and handed to templates as a
`datetime.date` (any text that is exactly an ISO date is one). Pure code: no database here.
"""

import re
from collections.abc import Iterable, Mapping
from datetime import date

TYPES = ("int", "decimal", "bool", "date", "text")
ALIASES = {"int": "int", "integer": "int", "decimal": "decimal", "float": "decimal", "number": "decimal",
           "bool": "bool", "boolean": "bool", "date": "date", "text": "text", "str": "text", "string": "text"}

# Leading zeros (a postcode, a phone number) keep a value text: "01234" is not the number 1234.
INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
DECIMAL = re.compile(r"[-+]?(0|[1-9][0-9]*)?\.[0-9]+|[-+]?(0|[1-9][0-9]*)(\.[0-9]*)?([eE][-+]?[0-9]+)?")
ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
TRUE, FALSE = {"true", "yes"}, {"false", "no"}
MAX_INT = 2**63 - 1  # what PostgreSQL and SQLite can compare in SQL


def _is_date(value: str) -> bool:
    if not ISO_DATE.fullmatch(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def fits(kind: str, value: str) -> bool:
    """Whether a (stripped, non-empty) CSV cell can be a value of the column type `kind`."""
    if kind == "int":
        return bool(INT.fullmatch(value)) and abs(int(value)) <= MAX_INT
    if kind == "decimal":
        return bool(DECIMAL.fullmatch(value)) and value.lower() not in {"nan", "inf"}
    if kind == "bool":
        return value.lower() in TRUE | FALSE
    if kind == "date":
        return _is_date(value)
    return True


def convert(kind: str, value: str):
    """A CSV cell -> its typed value (`fits(kind, value)` must hold)."""
    if kind == "int":
        return int(value)
    if kind == "decimal":
        return float(value)
    if kind == "bool":
        return value.lower() in TRUE
    return value  # a date stays ISO text in storage (see the module's docstring); text is text


class ColumnTypes:
    """Narrows each un-annotated column to the first type, in order int, decimal, bool, date, that
    fits every non-empty value seen; an annotated column keeps its annotation."""

    def __init__(self, annotated: Mapping[str, str]):
        self.annotated = dict(annotated)
        self.candidates: dict[str, list[str]] = {}

    def see(self, column: str, value: str) -> None:
        if column in self.annotated:
            return
        kinds = self.candidates.setdefault(column, ["int", "decimal", "bool", "date"])
        if kinds:
            kinds[:] = [k for k in kinds if fits(k, value)]

    def result(self) -> dict[str, str]:
        inferred = {c: (kinds[0] if kinds else "text") for c, kinds in self.candidates.items()}
        return {**inferred, **self.annotated}


def parse_header(columns: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """`loyalty_points:int` -> name `loyalty_points`, annotated `int`. Raises ValueError naming the
    column whose annotation is unknown."""
    names, annotated = [], {}
    for column in columns:
        name, sep, kind = column.partition(":")
        name = name.strip()
        if sep:
            canonical = ALIASES.get(kind.strip().lower())
            if canonical is None:
                raise ValueError(f"column '{column}': unknown type '{kind}' (use one of: {', '.join(TYPES)})")
            annotated[name] = canonical
        names.append(name)
    return names, annotated


def describe(value) -> str:
    """The attribute type of a stored value, as the documentation and the audience check name it."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "decimal"
    if isinstance(value, list):
        return "list"
    if value is None:
        return "null"
    return "date" if isinstance(value, str) and _is_date(value) else "text"


def shape(attributes: Mapping) -> tuple:
    """Which attributes a customer has, and of which type: customers of one shape render alike."""
    return tuple(sorted((k, describe(v)) for k, v in attributes.items()))


def template_values(attributes: Mapping) -> dict:
    """Stored attributes -> the values templates see (ISO date text -> `datetime.date`)."""
    out = dict(attributes)
    for key, value in attributes.items():
        if isinstance(value, str) and len(value) == 10 and _is_date(value):
            out[key] = date.fromisoformat(value)
    return out
