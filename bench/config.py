"""The suite's sizes (flags, `--quick`), its progress lines, and how it runs a coroutine."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, fields
from typing import Any, Final, TypeVar

import uvloop

T = TypeVar("T")
STARTED: Final = time.monotonic()


@dataclass(frozen=True)
class Sizes:
    """How much each measure does; `--quick` shrinks them for a trial run."""

    reps: int = 3  # repetitions of the cheap measures, whose median is shown
    requests: int = 2000  # per repetition of F2 and W1
    publish_messages: int = 2000  # F1's publishes in flight
    round_trips: int = 300  # F1's round trips and W4's waits, one at a time
    subscribers: int = 5000  # F3's and W5's sockets
    idle_s: float = 10.0  # W5's windows for Redis commands, idle and baseline
    batches: int = 5  # W2's batches of 1,000
    small_reps: int = 7  # factorial(150000) alone, in F4 and W6
    big_reps: int = 3  # factorial(1000000), in F4 and W6, and the progress-report cost
    texts: int = 500  # F5's texts, and W7's one-text jobs in each of its two runs
    floor_timeout_s: float = 120.0
    shared_redis: bool = False  # W5 on the shared Redis rather than a redis-server of its own
    only: str = ""  # comma-separated keys (F1, W3, ...): run just those

    def wants(self, key: str) -> bool:
        return not self.only or key in {part.strip().upper() for part in self.only.split(",")}


QUICK: Final = Sizes(
    reps=1,
    requests=500,
    round_trips=100,
    subscribers=1000,
    idle_s=3.0,
    batches=2,
    small_reps=3,
    big_reps=1,
    texts=100,
)


def parse_sizes(argv: list[str] | None = None) -> Sizes:
    """Sizes from the flags, else from BENCH_* variables (BENCH_QUICK=1, BENCH_REPS=5, ...)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.suite",
        description="factq beside its floors, measured in the same run: one markdown table. "
        "Every flag may also be given as a BENCH_* variable (BENCH_QUICK=1, BENCH_REPS=5).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and one repetition, for a trial run"
    )
    for spec in fields(Sizes):
        default = getattr(Sizes(), spec.name)
        flag = f"--{spec.name.replace('_', '-')}"
        shown = f"default {default!r}, with --quick {getattr(QUICK, spec.name)!r}"
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", default=None, help=shown)
        else:
            parser.add_argument(flag, type=type(default), default=None, help=shown)
    args = parser.parse_args(argv)
    quick = args.quick or _from_env("quick", False)
    base = QUICK if quick else Sizes()
    chosen = {}
    for spec in fields(Sizes):
        fallback = getattr(base, spec.name)
        given = getattr(args, spec.name)
        chosen[spec.name] = given if given is not None else _from_env(spec.name, fallback)
    return Sizes(**chosen)


def _from_env(name: str, fallback: Any) -> Any:
    value = os.environ.get(f"BENCH_{name.upper()}")
    if value is None:
        return fallback
    if isinstance(fallback, bool):
        return value.lower() not in ("", "0", "false", "no")
    return type(fallback)(value)


def log(message: str) -> None:
    """A progress line on stderr; stdout has only the table."""
    print(f"[{time.monotonic() - STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


def run_async(coroutine: Coroutine[Any, Any, T], timeout_s: float) -> T:
    """Run a coroutine on a fresh uvloop event loop, cancelled past `timeout_s`."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout_s):
            return await coroutine

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(bounded())
