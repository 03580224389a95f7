"""Shared fixtures. Integration fixtures start real servers once per test session; every test that
touches a database gets a fresh, fully migrated one, on SQLite and on PostgreSQL alike."""

import itertools
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Metrics of this test run (every process it starts) go to a directory of its own, never ./var.
# Set before anything imports campaigns.metrics, which reads it at import time.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="mab-test-metrics-"))

from campaigns import db  # noqa: E402
from campaigns.migrate import upgrade
from campaigns.settings import get_settings
from tests.servers import PostgresServer, RedisServer

_counter = itertools.count()


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mab")


@pytest.fixture(scope="session")
def redis_server(workdir):
    server = RedisServer(workdir / "redis").start()
    os.environ["MAB_REDIS_URL"] = server.url
    get_settings.cache_clear()
    from worker.app import celery_app

    celery_app.conf.broker_url = server.url
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server(workdir):
    server = PostgresServer(workdir / "pg").start()
    server.execute("CREATE DATABASE mab_template")
    upgrade(server.url("mab_template"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sqlite_template(workdir) -> Path:
    path = workdir / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


def fresh_database(kind: str, request, workdir: Path) -> str:
    """A new migrated database, copied from a template migrated once per session."""
    n = next(_counter)
    if kind == "sqlite":
        path = workdir / f"test-{n}.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    pg = request.getfixturevalue("postgres_server")
    pg.execute(f"CREATE DATABASE test_{n} TEMPLATE mab_template")
    return pg.url(f"test_{n}")


def point_at(database_url: str, outbox: Path, **extra: str) -> None:
    """Point settings and the engine of this process at a database (and an outbox)."""
    os.environ["MAB_DATABASE_URL"] = database_url
    os.environ["MAB_OUTBOX_DIR"] = str(outbox)
    os.environ.update(extra)
    get_settings.cache_clear()
    db.reset_engine()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, workdir, tmp_path):
    """Each test using it runs twice: on SQLite and on PostgreSQL."""
    url = fresh_database(request.param, request, workdir)
    point_at(url, tmp_path / "outbox")
    yield url
    db.reset_engine()


@pytest.fixture
def sqlite_url(request, workdir, tmp_path):
    url = fresh_database("sqlite", request, workdir)
    point_at(url, tmp_path / "outbox")
    yield url
    db.reset_engine()


@pytest.fixture
def session(database_url):
    with db.session_scope() as s:
        yield s
