"""Real servers for the integration tests: a redis-server and a PostgreSQL cluster, started by the
test run itself (PostgreSQL as the `postgres` user when the tests run as root, since it refuses
to run as root)."""

import glob
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import redis

from campaigns.stack import free_port, redis_binary


class RedisServer:
    def __init__(self, workdir: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc = None

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(
            [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
             "--appendonly", "yes", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait(lambda: redis.Redis.from_url(self.url).ping(), "redis-server")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else (shutil.which(name) or name)


class PostgresServer:
    def __init__(self, workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.datadir = workdir / "data"
        self.as_postgres = os.geteuid() == 0
        self.user = "postgres" if self.as_postgres else pwd.getpwuid(os.geteuid()).pw_name

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self) -> "PostgresServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.as_postgres:
            shutil.chown(self.workdir, "postgres", "postgres")
            os.chmod(self.workdir, 0o700)
            p = self.workdir.parent
            while p != p.parent:  # postgres must be able to reach its data directory
                os.chmod(p, os.stat(p).st_mode | 0o011)  # noqa: S103 (traverse only, no read or write)
                p = p.parent
        self._run(_pg_bin("initdb"), "-D", str(self.datadir), "-U", self.user, "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        opts = f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off " \
               "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        self._run(_pg_bin("pg_ctl"), "-D", str(self.datadir), "-o", opts, "-l", str(self.workdir / "pg.log"),
                  "-w", "start")
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str) -> None:
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(sql)

    def stop(self) -> None:
        try:
            self._run(_pg_bin("pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass


def _wait(probe, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if probe():
                return
        except Exception:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
        time.sleep(0.1)
