"""A campaign's audience beyond its segments: conditions on typed attributes and customer lists,
evaluated in SQL on PostgreSQL and SQLite (no Python per customer).

`{"filter": [{"attribute": "city", "equals": "Lyon"}, {"attribute": "points", "min": 1000}],
  "lists": ["vip"]}` targets the customers for whom every condition holds and who are in at least
one of the lists. A customer without the attribute, or with a value of another type, does not
match. Values are always bound parameters; attribute names are identifiers (checked on input).
"""

from sqlalchemy import text

# (PostgreSQL, SQLite) fragments; {a} is the attributes column, {k} the key's parameter, {p} the path's
_TYPE = ("json_typeof({a} -> {k})", "json_type({a}, {p})")
_TEXT = ("({a} ->> {k})", "json_extract({a}, {p})")
_IS_TEXT = ("json_typeof({a} -> {k}) = 'string'", "json_type({a}, {p}) = 'text'")
_IS_NUMBER = ("json_typeof({a} -> {k}) = 'number'", "json_type({a}, {p}) IN ('integer', 'real')")
_NUMBER = ("(CASE WHEN json_typeof({a} -> {k}) = 'number' THEN CAST({a} ->> {k} AS DOUBLE PRECISION) END)",
           "(CASE WHEN json_type({a}, {p}) IN ('integer', 'real') THEN json_extract({a}, {p}) END)")
_IS_DATE = ("json_typeof({a} -> {k}) = 'string' AND ({a} ->> {k}) ~ '^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}$'",
            "json_type({a}, {p}) = 'text' AND json_extract({a}, {p}) GLOB "
            "'[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'")
_BOOL = ("json_typeof({a} -> {k}) = 'boolean' AND ({a} ->> {k}) = {v}", "json_type({a}, {p}) = {v}")
_LISTS = ("EXISTS (SELECT 1 FROM json_array_elements_text(CASE WHEN json_typeof({a} -> 'lists') = 'array' "
          "THEN {a} -> 'lists' END) AS l(name) WHERE l.name IN ({names}))",
          "EXISTS (SELECT 1 FROM json_each({a}, '$.lists') AS l WHERE json_type({a}, '$.lists') = 'array' "
          "AND l.value IN ({names}))")


class _Builder:
    def __init__(self, pg: bool, column: str):
        self.i, self.pg, self.column, self.params = 0, pg, column, {}

    def bind(self, value) -> str:
        self.i += 1
        name = f"aud_{self.i}"
        self.params[name] = value
        return f"%({name})s"

    def frag(self, pair: tuple[str, str], attribute: str, **extra) -> str:
        key = self.bind(attribute) if self.pg else ""
        path = "" if self.pg else self.bind(f'$."{attribute}"')
        return pair[0 if self.pg else 1].format(a=self.column, k=key, p=path, **extra)

    def equals(self, attribute: str, value) -> str:
        if isinstance(value, bool):  # before numbers: a bool is an int in Python
            return self.frag(_BOOL, attribute, v=self.bind("true" if value else "false"))
        if isinstance(value, int | float):
            return f"{self.frag(_NUMBER, attribute)} = {self.bind(float(value))}"
        return f"({self.frag(_IS_TEXT, attribute)} AND {self.frag(_TEXT, attribute)} = {self.bind(str(value))})"

    def condition(self, c: dict) -> str:
        a, parts = c["attribute"], []
        if "equals" in c:
            parts.append(self.equals(a, c["equals"]))
        if "one_of" in c:
            parts.append("(" + " OR ".join(self.equals(a, v) for v in c["one_of"]) + ")")
        if c.get("min") is not None:
            parts.append(f"{self.frag(_NUMBER, a)} >= {self.bind(float(c['min']))}")
        if c.get("max") is not None:
            parts.append(f"{self.frag(_NUMBER, a)} <= {self.bind(float(c['max']))}")
        for bound, op in (("since", ">="), ("until", "<=")):
            if c.get(bound) is not None:
                parts.append(f"({self.frag(_IS_DATE, a)} AND {self.frag(_TEXT, a)} {op} {self.bind(str(c[bound]))})")
        return " AND ".join(parts)

    def lists(self, names: list[str]) -> str:
        return _LISTS[0 if self.pg else 1].format(a=self.column, names=", ".join(self.bind(n) for n in names))


def sql(audience: dict | None, pg: bool, column: str) -> tuple[str, dict]:
    """(`AND …` clause with %(name)s placeholders, its parameters); empty without an audience."""
    if not audience:
        return "", {}
    b = _Builder(pg, column)
    parts = [f"({b.condition(c)})" for c in audience.get("filter") or []]
    if audience.get("lists"):
        parts.append(b.lists(audience["lists"]))
    parts = [p for p in parts if p != "()"]
    return ("AND " + " AND ".join(parts), b.params) if parts else ("", {})


def conditions(audience: dict | None, pg: bool) -> tuple:
    """The same clause for an ORM query over the customer table."""
    clause, params = sql(audience, pg, "customer.attributes")
    if not clause:
        return ()
    named = clause[4:].replace("%(", ":").replace(")s", "")
    return (text(named).bindparams(**params),)
