"""Process trees from /proc (Linux): what a process started, and whether it still runs.

A process is known by its pid and its start time together, so that a pid the
kernel hands out again later is never mistaken for (or killed as) the one we saw.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import NamedTuple


class Proc(NamedTuple):
    pid: int
    start: int  # clock ticks after boot (field 22 of /proc/PID/stat)


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time), or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            # The command name may hold spaces and parentheses: split after the last ')'.
            fields = file.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[19])


def proc(pid: int) -> Proc | None:
    """The live process with this pid now, or None."""
    stat = _stat(pid)
    return Proc(pid, stat[2]) if stat is not None and stat[0] not in ("Z", "X") else None


def is_running(process: Proc) -> bool:
    """True while the process exists and is not a zombie (nothing here reaps orphans)."""
    return proc(process.pid) == process


def descendants(pid: int) -> list[Proc]:
    """Every live process below pid: children, their children, and so on."""
    children: dict[int, list[Proc]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[0] not in ("Z", "X"):
                children.setdefault(stat[1], []).append(Proc(int(entry), stat[2]))
    found: list[Proc] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child.pid)
    return found


def wait_gone(processes: list[Proc], timeout_s: float) -> list[Proc]:
    """Wait until none of the processes runs, or timeout_s passes; those still running."""
    deadline = time.monotonic() + timeout_s
    alive = [process for process in processes if is_running(process)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [process for process in alive if is_running(process)]
    return alive


def kill_all(processes: list[Proc]) -> None:
    """SIGKILL each of the processes that still runs."""
    for process in processes:
        if is_running(process):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
