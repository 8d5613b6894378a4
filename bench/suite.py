"""factq beside its floors: one markdown table, every figure with a floor measured in the
same run, the ratio, and the issue's target.

Each floor runs just before the workloads it is the floor of (F1 then W2-W4, F2 then
W1, F3 then W5, F5 then W7; W6 measures F4 between its own runs), so that whatever
else the machine is doing weighs on both alike. C1 and C2, last, start a Redis Cluster
and a RabbitMQ cluster on loopback once for both, and compare within themselves (the
clusters against the single local servers, min replicas 1 against 0, a pool of 2
against 1); `--only C2` starts them too. Each workload runs on a factq of its
own (`factq api` and `factq worker` processes, a fresh namespace, the result cache
off, distinct inputs) under its own timeout: one that fails or times out is a row
that says so, and its processes and namespace are cleaned up all the same.

    make bench                                  # the whole suite, about 3 minutes on 2 cores
    make bench BENCH_ARGS=--quick               # a trial run, under a minute
    PYTHONPATH=. .venv/bin/python -m bench.suite --only F2,W1 --reps 5
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from typing import Final

from bench import big_jobs, cluster, embedding, submitting, subscribers, tiny_jobs
from bench import floors as f
from bench.config import Sizes, log, parse_sizes
from bench.embedding import ModelFloors
from bench.procs import CpuUse, machine
from bench.table import Row, median, micros, millis, per_second, render, seconds
from factq.api.server import raise_descriptor_limit

Part = Callable[[Sizes, ModelFloors, list[Row], float], None]

# In the order they run, each with its own limit in seconds (the full sizes take
# well under these on 2 cores).
PARTS: Final[list[tuple[str, str, Part, float]]] = [
    ("F1", "RabbitMQ floor", f.broker_floor, 120.0),
    ("W2", "batches", submitting.batches, 90.0),
    ("W3", "tiny jobs on multiplexed sockets", tiny_jobs.tiny_jobs, 120.0),
    ("W4", "Prefer: wait, one at a time", submitting.waits, 120.0),
    ("F2", "FastAPI floor", f.http_floor, 120.0),
    ("W1", "single submissions", submitting.single_submissions, 120.0),
    ("F3", "WebSocket floor", f.websocket_floor, 120.0),
    ("W5", "WebSocket subscribers", subscribers.subscribers, 300.0),
    ("F4", "progress-report cost", f.progress_cost, 60.0),
    ("W6", "big results", big_jobs.big_jobs, 180.0),
    ("F5", "embedding model floor", embedding.model_floor, 180.0),
    ("W7", "one-text embed jobs, batching on and off", embedding.embed_jobs, 300.0),
    ("C1", "Redis Cluster and RabbitMQ cluster", cluster.on_clusters, 420.0),
]
# Parts that measure more than their own key: the clusters start once for C1 and C2.
ALSO: Final[dict[str, tuple[str, ...]]] = {"C1": ("C2",)}


def run_part(
    key: str, name: str, part: Part, timeout_s: float, sizes: Sizes, floors: ModelFloors
) -> list[Row]:
    rows: list[Row] = []
    log(f"{key} ({name}) ...")
    try:
        part(sizes, floors, rows, timeout_s)
    except TimeoutError:
        rows.append(Row(key, f"{name}: stopped", f"timed out after {timeout_s:g} s", meets=False))
    except Exception as exc:
        log(traceback.format_exc())
        message = f"{type(exc).__name__}: {exc}".replace("|", "/").splitlines()[0][:120]
        rows.append(Row(key, f"{name}: failed", message, meets=False))
    return rows


def floor_rows(floors: ModelFloors) -> list[Row]:
    """The floors themselves, each once, so that the table shows what it divides by."""

    def shown(value: float | None, show: Callable[[float], str]) -> str:
        return "-" if value is None else show(value)

    def client(cpu_s: float | None) -> str:
        return "-" if cpu_s is None else micros(cpu_s)

    rtt = f"{shown(floors.round_trip_p50_s, millis)} / {shown(floors.round_trip_p99_s, millis)}"
    ws = (
        f"{shown(floors.ws_connect_s, seconds)}, "
        f"{shown(floors.ws_kib_per_socket, lambda v: f'{v:.1f} KiB')}"
    )
    singles = (
        f"{shown(median(floors.single_150k), millis)} / {shown(median(floors.single_1m), millis)}"
    )
    publish = shown(floors.publish_rate, per_second)
    return [
        Row("F1", "aio-pika publish + confirm to a fresh quorum queue, 2,000 in flight", "-",
            publish, client_cpu=client(floors.publish_client_cpu_s)),
        Row("F1", "aio-pika publish + confirm, then its consumer has it: p50 / p99", "-", rtt),
        Row("F2", "bare FastAPI POST /v1/jobs (factq's JobRequest), 64 connections", "-",
            shown(floors.http_rate, per_second), client_cpu=client(floors.http_client_cpu_s)),
        Row("F3", "bare uvicorn WebSocket, one JSON message: connect all; RSS per idle socket",
            "-", ws, client_cpu=client(floors.ws_client_cpu_s)),
        Row("F4", "factorial(150000) / factorial(1000000) + decimal digits, gmpy2, in-process",
            "-", singles),
        Row("F4", "8 x factorial(150000) + decimal digits on a pool of 2 processes", "-",
            shown(median(floors.pool_eight), millis)),
        *embedding.floor_rows(floors),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    sizes = parse_sizes(argv)
    started = time.monotonic()
    # One descriptor per socket in this process; the servers it starts inherit the limit.
    raise_descriptor_limit()
    header, whole = machine(), CpuUse()
    floors = ModelFloors()
    measured: dict[str, list[Row]] = {}
    contention: list[str] = []
    parts = [part for part in PARTS if any(map(sizes.wants, (part[0], *ALSO.get(part[0], ()))))]
    if sizes.wants("F4") and not sizes.wants("W6"):
        parts.append(("F4", "compute floor", f.compute_floor, 120.0))
    for key, name, part, timeout_s in parts:
        cpu = CpuUse()
        measured.setdefault(key, []).extend(run_part(key, name, part, timeout_s, sizes, floors))
        contention.append(f"{key} {cpu.short()}")
    floor_keys = [key for key in ("F1", "F2", "F3", "F5") if sizes.wants(key)]
    floor_keys += ["F4"] if sizes.wants("F4") or sizes.wants("W6") else []
    floor_table = floor_rows(floors)
    rows: list[Row] = []
    for key in ("F1", "F2", "F3", "F4", "F5", "W1", "W2", "W3", "W4", "W5", "W6", "W7", "C1"):
        rows += [row for row in floor_table if row.key == key and key in floor_keys]
        rows += measured.get(key, [])
    elapsed = time.monotonic() - started
    print(f"\n## factq beside its floors\n\n{header}; the suite took {elapsed:.0f} s.")
    print(f"{whole.summary()}.")
    print(f"Sizes: {sizes}\n")
    print(render(rows))
    met = [row for row in rows if row.meets is not None]
    print(f"\n{sum(bool(row.meets) for row in met)} of {len(met)} targets met.")
    print(
        "Cores busy during each part, in the order run (this suite / the shared Redis and "
        "RabbitMQ / other programs): " + "; ".join(contention) + "."
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
