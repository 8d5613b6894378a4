"""WebSocket fan-out on one API process: many subscribers, and many idle connections.

1. N subscribers, each on its own job's socket, connected while the jobs wait
   in the queue; then a worker starts and runs them all. Reported: the delay
   from the worker's store of each job's final state (its `finished_at`, from
   Redis's clock) to the subscriber's receipt, and the API's peak memory.
2. M idle connections on `/v1/events`, held across a protocol ping; reported:
   how many survive, and the API's memory per connection.

Run with `make bench`, or for other sizes
`PYTHONPATH=. .venv/bin/python -m bench.websockets_fanout --subscribers 5000 --idle 10000`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import websockets

from tests.conftest import make_settings
from tests.support.backends import delete_namespace
from tests.support.service import environment, running_service

CONNECT_CONCURRENCY = 200


def memory_kib(pid: int, field: str) -> int:
    """VmRSS or VmHWM (peak) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


def mib(kib: float) -> str:
    return f"{kib / 1024:.0f} MiB"


async def submit_jobs(base_url: str, count: int) -> list[str]:
    ids: list[str] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        for start in range(0, count, 1000):
            size = min(1000, count - start)
            body = {"jobs": [{"task": "factorial", "input": {"n": 10}}] * size}
            response = await http.post("/v1/jobs/batch", json=body)
            ids += [job["id"] for job in response.json()["jobs"]]
    return ids


class Countdown:
    """Set once `count` subscribers are in place."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.done = asyncio.Event()

    def tick(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set()


async def subscriber(url: str, connecting: asyncio.Semaphore, ready: Countdown) -> float:
    """Seconds from the job's finished_at to the receipt of its final event."""
    async with connecting:
        socket = await websockets.connect(url, open_timeout=60, max_queue=None)
    async with socket:
        await socket.recv()  # the current state: queued
        ready.tick()
        async for message in socket:
            received = time.time()
            job = json.loads(message)["job"]
            if job["status"] == "succeeded":
                return received - datetime.fromisoformat(job["finished_at"]).timestamp()
    raise RuntimeError("closed before the job finished")


async def fan_out(
    base_url: str, api_pid: int, count: int, worker_env: dict[str, str]
) -> dict[str, str]:
    ids = await submit_jobs(base_url, count)
    ws_base = base_url.replace("http://", "ws://")
    connecting = asyncio.Semaphore(CONNECT_CONCURRENCY)
    ready = Countdown(count)
    rss_before = memory_kib(api_pid, "VmRSS")
    tasks = [
        asyncio.create_task(subscriber(f"{ws_base}/v1/jobs/{job_id}/events", connecting, ready))
        for job_id in ids
    ]
    await asyncio.wait_for(ready.done.wait(), 300)
    rss_connected = memory_kib(api_pid, "VmRSS")
    # Only now do the jobs run: every subscriber is waiting for its job's end.
    worker = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "factq", "worker", "--concurrency", "2"),
        env=worker_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        delays = sorted(await asyncio.gather(*tasks))
    finally:
        worker.terminate()
        await asyncio.wait_for(worker.wait(), 30)
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    return {
        "subscribers that got their terminal event": f"{len(delays)} of {count}",
        "store -> client delay, p50": f"{statistics.median(delays) * 1000:.1f} ms",
        "store -> client delay, p99": f"{p99 * 1000:.1f} ms",
        "API memory before / with subscribers": f"{mib(rss_before)} / {mib(rss_connected)}",
        "API peak memory (VmHWM)": mib(memory_kib(api_pid, "VmHWM")),
    }


async def idle(base_url: str, api_pid: int, count: int, hold_s: float) -> dict[str, str]:
    ws_base = base_url.replace("http://", "ws://")
    connecting = asyncio.Semaphore(CONNECT_CONCURRENCY)
    rss_before = memory_kib(api_pid, "VmRSS")

    async def connect() -> websockets.ClientConnection:
        async with connecting:
            return await websockets.connect(f"{ws_base}/v1/events", open_timeout=60)

    sockets = await asyncio.gather(*(connect() for _ in range(count)))
    rss_connected = memory_kib(api_pid, "VmRSS")
    await asyncio.sleep(hold_s)
    open_sockets = [socket for socket in sockets if socket.state.name == "OPEN"]
    # A round trip on every socket shows each is still served, not only open.
    pongs = await asyncio.gather(*(socket.ping() for socket in open_sockets))
    await asyncio.gather(*(asyncio.wait_for(pong, 60) for pong in pongs))
    rss_after = memory_kib(api_pid, "VmRSS")
    await asyncio.gather(*(socket.close() for socket in sockets))
    survived = f"still open after {hold_s:g} s (server pings every 20 s)"
    return {
        survived: f"{len(open_sockets)} of {count}",
        "API memory before / with / after the hold": " / ".join(
            map(mib, (rss_before, rss_connected, rss_after))
        ),
        "API memory per idle connection": f"{(rss_connected - rss_before) / count:.1f} KiB",
    }


def print_table(title: str, rows: dict[str, str]) -> None:
    width = max(map(len, rows))
    print(f"\n{title}\n")
    print(f"| {'measure'.ljust(width)} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for name, value in rows.items():
        print(f"| {name.ljust(width)} | {value} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=5000)
    parser.add_argument("--idle", type=int, default=10_000)
    parser.add_argument("--hold-s", type=float, default=25.0)
    args = parser.parse_args()
    # One descriptor per connection, here and in the API process (which inherits this).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # Thousands of watchers, all from this one address: as many different
    # clients would be, each under its own cap.
    streams = args.subscribers + args.idle + 100
    settings = make_settings(task_modules="", max_streams_per_caller=streams)
    try:
        with (
            tempfile.TemporaryDirectory() as logs,
            running_service(settings, Path(logs), workers=0) as service,
        ):
            api_pid = service.processes["api"].pid
            env = environment(settings)
            fanout = asyncio.run(fan_out(service.base_url, api_pid, args.subscribers, env))
            idle_rows = asyncio.run(idle(service.base_url, api_pid, args.idle, args.hold_s))
    finally:
        asyncio.run(delete_namespace(settings))
    print_table(f"WebSocket fan-out on one API process, {args.subscribers} subscribers", fanout)
    print_table(f"Idle WebSocket connections on one API process, {args.idle}", idle_rows)


if __name__ == "__main__":
    main()
