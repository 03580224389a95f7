"""Hostile input against `mab up` as an operator runs it (a scratch folder, default settings).

Prints, each beside its baseline measured in the same run:

* `/health` latency while a campaign whose HTML holds `{{ (')'*58000 ~ 'x.')|urlize }}` is saved
  again and again (each save must be a 422), against `/health` latency with nothing else running;
* the API process's peak memory (VmHWM), the answer's size and `/health` latency meanwhile for a
  10 MB body of invalid customers, against the same for a 10 MB body of valid ones.

    nice -n 10 .venv/bin/python benchmarks/bench_hostile_input.py [--saves 20]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from campaigns.stack import free_port  # noqa: E402
from tests.factories import small_campaign_payload  # noqa: E402

URLIZE_BOMB = "{{ (')'*58000 ~ 'x.')|urlize }}"


def start(folder: Path, port: int) -> subprocess.Popen:
    mab = Path(sys.executable).with_name("mab")
    proc = subprocess.Popen([str(mab), "up", "--port", str(port)], cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                key_file = folder / "var" / "admin.key"
                if key_file.exists():
                    return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"mab up did not start: {proc.stdout.read().decode()[-2000:]}")


def api_pid(port: int) -> int:
    """The uvicorn process serving the port (a child of `mab up`)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"uvicorn" in part for part in cmd) and str(port).encode() in cmd:
            return int(entry.name)
    raise SystemExit("no uvicorn process found")


def memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def health_latencies(url: str, stop: threading.Event | None, count: int) -> list[float]:
    out = []
    with httpx.Client(timeout=300) as client:
        while (stop is None and len(out) < count) or (stop is not None and not stop.is_set()):
            started = time.perf_counter()
            client.get(url + "/health").raise_for_status()
            out.append(time.perf_counter() - started)
            time.sleep(0.02)
    return out


def describe(samples: list[float]) -> str:
    ordered = sorted(samples)
    return (f"n={len(samples)}  median {statistics.median(ordered) * 1000:.1f} ms  "
            f"p95 {ordered[int(0.95 * (len(ordered) - 1))] * 1000:.1f} ms  max {ordered[-1] * 1000:.1f} ms")


def customers_body(valid: bool, size: int) -> bytes:
    items, total, i = [], 16, 0
    while total < size:
        item = ({"external_id": f"c{i}", "email": f"c{i}@example.com", "segment": "champions",
                 "attributes": {"first_name": f"N{i}", "city": "Lyon"}} if valid else
                {"external_id": "", "email": f"bad{i}", "attributes": {"a": [1], "b": {"x": 1}}, "consent": "maybe"})
        items.append(item)
        total += len(json.dumps(item)) + 2
        i += 1
    return json.dumps({"customers": items}).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=20, help="hostile saves while /health is polled")
    parser.add_argument("--body-mb", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mab-hostile-") as tmp:
        folder, port = Path(tmp), free_port()
        proc = start(folder, port)
        try:
            run(f"http://127.0.0.1:{port}", (folder / "var" / "admin.key").read_text().strip(), api_pid(port), args)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)  # what Ctrl-C does: a clean stop
            proc.wait(60)


def run(url: str, key: str, pid: int, args) -> None:
    headers = {"X-API-Key": key}
    print(f"mab up at {url}, API process {pid}")
    baseline = health_latencies(url, None, 100)
    print(f"/health, idle:                      {describe(baseline)}")

    payload = small_campaign_payload(name="hostile")
    payload["template"]["html"] += URLIZE_BOMB
    stop, statuses, save_times = threading.Event(), [], []
    result: list[list[float]] = []
    poller = threading.Thread(target=lambda: result.append(health_latencies(url, stop, 0)))
    poller.start()
    with httpx.Client(timeout=300, headers=headers) as client:
        for _ in range(args.saves):
            started = time.perf_counter()
            statuses.append(client.post(url + "/campaigns", json=payload).status_code)
            save_times.append(time.perf_counter() - started)
    stop.set()
    poller.join()
    print(f"/health, during {args.saves} urlize saves:    {describe(result[0])}")
    print(f"  the saves: statuses {sorted(set(statuses))}, {describe(save_times)}")

    size = int(args.body_mb * 1_000_000)
    for label, valid in (("invalid", False), ("valid", True)):  # invalid first: its own peak
        body = customers_body(valid, size)
        before = memory_kb(pid, "VmRSS")
        stop, result = threading.Event(), []
        poller = threading.Thread(target=lambda out=result, done=stop: out.append(health_latencies(url, done, 0)))
        poller.start()
        started = time.perf_counter()
        r = httpx.post(url + "/customers", content=body, timeout=600,
                       headers={**headers, "Content-Type": "application/json"})
        seconds = time.perf_counter() - started
        stop.set()
        poller.join()
        print(f"{len(body) / 1e6:.1f} MB of {label} customers: {r.status_code} in {seconds:.1f} s, answer "
              f"{len(r.content):,} bytes; API RSS before {before / 1024:.0f} MB, peak so far (VmHWM) "
              f"{memory_kb(pid, 'VmHWM') / 1024:.0f} MB")
        print(f"  /health meanwhile: {describe(result[0])}")
        if not valid:
            detail = r.json()["detail"]
            print(f"  {len(detail)} entries; last: {detail[-1]}")


if __name__ == "__main__":
    main()
