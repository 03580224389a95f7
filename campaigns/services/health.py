"""Readiness: can this process do its work right now? The database answers, its schema is at the
newest migration, and the broker answers. Liveness (GET /health) needs none of it."""

import time
from functools import lru_cache

from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from campaigns.db import get_engine
from campaigns.metrics import broker_url, redis_client
from campaigns.migrate import alembic_config


@lru_cache(maxsize=1)
def migration_heads() -> tuple[str, ...]:
    """The head revision(s) of the migrations this code ships with (files: read once)."""
    return tuple(sorted(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()))


def _why(exc: Exception) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:300]


def _database() -> dict:
    with get_engine().connect() as conn:
        conn.execute(text("SELECT 1"))
    return {"ok": True}


def _migrations() -> dict:
    with get_engine().connect() as conn:
        current = tuple(sorted(MigrationContext.configure(conn).get_current_heads()))
    heads = migration_heads()
    out = {"ok": current == heads, "current": list(current), "head": list(heads)}
    if current != heads:
        out["error"] = f"schema at {', '.join(current) or 'no revision'}, this code needs {', '.join(heads)}"
    return out


def _broker() -> dict:
    redis_client(broker_url()).ping()
    return {"ok": True}


CHECKS = (("database", _database), ("migrations", _migrations), ("broker", _broker))


def readiness() -> tuple[bool, dict]:
    """(ready, per-check details). A check that raises is a failed check with the reason; the
    migration check is skipped when the database does not answer (it would only repeat why)."""
    checks: dict[str, dict] = {}
    for name, check in CHECKS:
        if name == "migrations" and not checks["database"]["ok"]:
            checks[name] = {"ok": False, "error": "skipped: the database is unreachable"}
            continue
        started = time.perf_counter()
        try:
            result = check()
        except Exception as exc:
            result = {"ok": False, "error": _why(exc)}
        result["ms"] = round((time.perf_counter() - started) * 1000, 1)
        checks[name] = result
    return all(c["ok"] for c in checks.values()), checks
