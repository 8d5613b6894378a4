"""Faults, one after another on a seeded plan: a worker SIGKILLed while it runs a job,
RabbitMQ stopped and started, Redis SIGKILLed and started again on its AOF."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Literal

from tests.support.procs import descendants, kill_all, wait_gone
from tests.support.redis_server import RedisServer
from tests.support.service import Service

FaultKind = Literal["kill_worker", "restart_rabbitmq", "restart_redis"]

RABBITMQCTL_TIMEOUT_S = 90.0
# A killed worker's pool processes must be gone this soon after it.
ORPHAN_GRACE_S = 5.0
# How long to look for a worker in the middle of a job before killing any.
BUSY_SEARCH_S = 2.0
WORKER_START_TIMEOUT_S = 45.0


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    gap_s: float  # pause before it: after the previous fault, or into the outage it is in
    down_s: float = 0.0  # how long a restarted backing service stays down
    during: tuple[Fault, ...] = ()  # faults while this one's backing service is down


def plan_faults(seed: int, *, worker_kills: int) -> list[Fault]:
    """The faults of one run, in order; the seed decides their order, their timing,
    and which of them happen together (a worker killed while Redis or RabbitMQ is
    down, Redis killed while RabbitMQ is down). worker_kills land while the
    services are up, each on a worker that has just begun a job; a kill during
    an outage comes on top of them."""
    rng = random.Random(f"{seed}-plan")

    def kill_during(down_s: float) -> Fault:
        return Fault("kill_worker", gap_s=round(rng.uniform(0.2, down_s - 0.3), 2))

    redis_down_s = round(rng.uniform(0.8, 3.0), 2)
    redis_during: tuple[Fault, ...] = ()
    if rng.random() < 0.5:
        redis_during = (kill_during(redis_down_s),)
    redis = Fault("restart_redis", round(rng.uniform(1.5, 4.0), 2), redis_down_s, redis_during)
    rabbitmq_down_s = round(rng.uniform(0.8, 3.0), 2)
    rabbitmq_during: tuple[Fault, ...] = ()
    together = rng.choice(["alone", "with a kill", "with Redis"])
    if together == "with a kill":
        rabbitmq_during = (kill_during(rabbitmq_down_s),)
    elif together == "with Redis":
        rabbitmq_down_s += redis_down_s
        rabbitmq_during = (Fault("restart_redis", 0.3, redis_down_s, redis_during),)
    rabbitmq = Fault("restart_rabbitmq", redis.gap_s, rabbitmq_down_s, rabbitmq_during)
    plan = [Fault("kill_worker", round(rng.uniform(1.5, 4.0), 2)) for _ in range(worker_kills)]
    plan += [rabbitmq] if together == "with Redis" else [rabbitmq, redis]
    rng.shuffle(plan)
    return plan


def describe(plan: list[Fault]) -> str:
    """The plan on one line: `kill, redis(kill), kill, rabbitmq, ...`."""
    short = {"kill_worker": "kill", "restart_rabbitmq": "rabbitmq", "restart_redis": "redis"}
    return ", ".join(
        short[f.kind] + (f"({describe(list(f.during))})" if f.during else "") for f in plan
    )


def rabbitmqctl(*args: str) -> None:
    executable = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run(
        [executable, *args], check=True, capture_output=True, timeout=RABBITMQCTL_TIMEOUT_S
    )


def ensure_rabbitmq_running() -> None:
    """Start RabbitMQ's application if a fault left it stopped (a no-op when it runs)."""
    rabbitmqctl("start_app")
    rabbitmqctl("await_startup")


@dataclass
class Chaos:
    """Carries out a plan of faults against a running service and its private Redis."""

    service: Service
    redis: RedisServer
    rng: random.Random
    log: str  # the `record` task's execution log
    sleep_by_tag: dict[str, float]
    worker_kills: int = 0
    kills_mid_job: int = 0
    rabbitmq_restarts: int = 0
    redis_restarts: int = 0
    killed: set[str] = field(default_factory=set)
    # Pids of every process of a killed worker: its executions may be repeated.
    killed_pids: set[int] = field(default_factory=set)
    # Where the execution log ended once RabbitMQ had stopped: a job begun before
    # may run again, its message given back by the broker while it ran.
    rabbitmq_stop_offsets: list[int] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic, init=False)
    _stop: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _outages: int = field(default=0, init=False)  # backing services down now
    _replacements: int = field(default=0, init=False)  # workers owed for those killed

    def stop(self) -> None:
        """Carry out no further fault (the one in progress completes)."""
        self._stop.set()

    async def run(self, plan: list[Fault]) -> None:
        self.started = time.monotonic()
        self._note(f"plan: {describe(plan)}")
        for fault in plan:
            try:
                await asyncio.wait_for(self._stop.wait(), fault.gap_s)
                return
            except TimeoutError:
                pass
            # In a thread: the load and the probes go on while a fault takes seconds.
            await asyncio.to_thread(getattr(self, fault.kind), fault)

    def _note(self, text: str) -> None:
        self.timeline.append(f"{time.monotonic() - self.started:6.1f} s  {text}")

    # Faults (blocking; run in a thread).

    def kill_worker(self, fault: Fault) -> None:
        # During an outage no job begins: any worker then, and it holds jobs.
        victim, tag = self._choose_victim(seek_busy_s=0 if self._outages else BUSY_SEARCH_S)
        process = self.service.processes[victim]
        tree = descendants(process.pid)
        self.killed_pids.update([process.pid, *(child.pid for child in tree)])
        self.service.kill(victim)
        self.killed.add(victim)
        self.worker_kills += 1
        self.kills_mid_job += tag is not None
        during = " during the outage" if self._outages else ""
        self._note(f"SIGKILL {victim} (pid {process.pid})" + (f" running {tag}" if tag else during))
        survivors = wait_gone(tree, ORPHAN_GRACE_S)
        if survivors:
            self.orphans += [f"{victim}: pid {child.pid}" for child in survivors]
            kill_all(survivors)
        # A worker started while a backing service is down fails fast, by design;
        # its supervisor starts it again later. Here: once the outage is over.
        self._replacements += 1
        if not self._outages:
            self._start_replacements()

    def restart_rabbitmq(self, fault: Fault) -> None:
        self._note("rabbitmqctl stop_app")
        self._outages += 1
        try:
            rabbitmqctl("stop_app")
            self.rabbitmq_stop_offsets.append(_size(self.log))
            self._during_outage(fault)
        finally:
            # Whatever happened, RabbitMQ is left running.
            rabbitmqctl("start_app")
            rabbitmqctl("await_startup")
            self._outages -= 1
        self.rabbitmq_restarts += 1
        self._note("RabbitMQ started again")
        self._start_replacements()

    def restart_redis(self, fault: Fault) -> None:
        self.redis.kill()
        self._outages += 1
        self._note("SIGKILL redis-server")
        try:
            self._during_outage(fault)
        finally:
            self.redis.start()
            self._outages -= 1
        self.redis_restarts += 1
        self._note("redis-server started again on its AOF")
        self._start_replacements()

    def _during_outage(self, fault: Fault) -> None:
        """The faults planned during this outage, then the rest of its time down."""
        ends = time.monotonic() + fault.down_s
        for inner in fault.during:
            time.sleep(inner.gap_s)
            getattr(self, inner.kind)(inner)
        time.sleep(max(0.0, ends - time.monotonic()))

    # Helpers.

    def _live_workers(self) -> list[str]:
        return [
            name
            for name, process in self.service.processes.items()
            if name.startswith("worker-") and process.poll() is None
        ]

    def _choose_victim(self, seek_busy_s: float) -> tuple[str, str | None]:
        """A worker that has just begun a job of 0.1 s or more, and that job's tag;
        any worker, and None, if none begins one within seek_busy_s."""
        owners = {
            child.pid: name
            for name in self._live_workers()
            for child in descendants(self.service.processes[name].pid)
        }
        tail = _LogTail(self.log)
        deadline = time.monotonic() + seek_busy_s
        while time.monotonic() < deadline:
            # A line is written as the job begins: a long job is still running.
            begun = [
                (owners[parent], tag)
                for tag, parent in tail.new_lines()
                if parent in owners and self.sleep_by_tag.get(tag, 0) >= 0.1
            ]
            if begun:
                return self.rng.choice(begun)
            time.sleep(0.01)
        return self.rng.choice(self._live_workers()), None

    def _start_replacements(self) -> None:
        """Start the workers owed for those killed, as a supervisor would; each is
        ready before the next fault."""
        while self._replacements and not self._outages:
            self._replacements -= 1
            name = self.service.start_worker()
            path = self.service.logs / f"{name}.log"
            deadline = time.monotonic() + WORKER_START_TIMEOUT_S
            while "serving " not in path.read_text(errors="replace"):
                if time.monotonic() > deadline or self.service.processes[name].poll() is not None:
                    self.problems.append(f"replacement {name} did not start serving")
                    break
                time.sleep(0.05)
            else:
                self._note(f"{name} started and serving")


class _LogTail:
    """Lines appended to the execution log from now on, as (tag, parent pid)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._offset = _size(path)

    def new_lines(self) -> list[tuple[str, int]]:
        if not os.path.exists(self._path):
            return []
        with open(self._path, "rb") as file:
            file.seek(self._offset)
            data = file.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        lines = [line.split() for line in complete.decode().splitlines()]
        return [(fields[0], int(fields[2])) for fields in lines if len(fields) == 3]


def _size(path: str) -> int:
    return os.path.getsize(path) if os.path.exists(path) else 0
