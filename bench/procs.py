"""What the suite reads about processes and this machine, from /proc."""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process so far (its exited children not included)."""
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def tree_cpu_seconds(pids: Iterable[int]) -> float:
    """CPU time of these processes and all their living descendants."""
    return sum(_or_zero(cpu_seconds, pid) for pid in with_descendants(pids))


def rss_kib(pid: int) -> int:
    """Resident set size of a process, in KiB."""
    return _status_field(pid, "VmRSS")


def pss_kib(pid: int) -> int:
    """Proportional set size (shared pages split among their users), in KiB."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise LookupError(f"no Pss in /proc/{pid}/smaps_rollup")


def tree_pss_kib(pids: Iterable[int]) -> float:
    """PSS of these processes and all their living descendants together, in KiB."""
    return sum(_or_zero(pss_kib, pid) for pid in with_descendants(pids))


def with_descendants(pids: Iterable[int]) -> list[int]:
    found: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        found.append(pid)
        for task in _list_dir(Path(f"/proc/{pid}/task")):
            try:
                todo += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def _list_dir(path: Path) -> list[Path]:
    try:
        return list(path.iterdir())
    except OSError:
        return []


def _or_zero(read: Callable[[int], float], pid: int) -> float:
    # A process may end between listing and reading it (a replaced pool process).
    try:
        return read(pid)
    except (OSError, LookupError, IndexError, ValueError):
        return 0.0


def _status_field(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


class PeakSampler:
    """Samples a reading in a thread every `interval_s` inside its `with`; keeps the peak."""

    def __init__(self, read: Callable[[], float], interval_s: float = 0.2) -> None:
        self._read = read
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-sampler", daemon=True)
        self.peak = 0.0
        self.samples = 0
        # The sampler's own CPU (reading smaps_rollup walks the page tables: a few ms
        # a process), so that the load client's CPU can leave it out.
        self.cpu_s = 0.0

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self._read())
            self.samples += 1
            self.cpu_s = time.thread_time()
            if self._stop.wait(self._interval_s):
                return

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        # One last reading: the end of the workload may be its peak.
        self.peak = max(self.peak, self._read())


# The shared servers' processes: RabbitMQ's Erlang VM and Redis.
BACKENDS = frozenset({"beam.smp", "redis-server"})


class CpuUse:
    """The machine's busy CPU over a stretch, split into this suite's (this process and
    the children it waited for: the servers it started, their pools), the shared Redis
    and RabbitMQ servers' (busy for this suite and for others alike), and the rest:
    other programs, whose load skews what the suite measures."""

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._busy, self._ours = _busy_s(), _ours_s()
        self._backends = {pid: _or_zero(cpu_seconds, pid) for pid in _backend_pids()}

    def cores(self) -> tuple[float, float, float]:
        """Cores busy since the start: this suite's, the shared servers', everyone else's."""
        elapsed = time.monotonic() - self._started
        busy, ours = _busy_s() - self._busy, _ours_s() - self._ours
        # Only the servers running at the start (a redis-server of the suite's own is ours).
        backends = sum(
            max(_or_zero(cpu_seconds, pid) - before, 0.0) for pid, before in self._backends.items()
        )
        return ours / elapsed, backends / elapsed, (busy - ours - backends) / elapsed

    def short(self) -> str:
        ours, backends, others = self.cores()
        return f"{ours:.2f} / {backends:.2f} / {others:.2f}"

    def summary(self) -> str:
        ours, backends, others = self.cores()
        return (
            f"CPU over the run, in cores of {os.cpu_count()}: this suite and the servers it "
            f"started {ours:.2f}, the shared Redis and RabbitMQ {backends:.2f}, "
            f"other programs {others:.2f}"
        )


def _backend_pids() -> list[int]:
    pids = []
    for entry in _list_dir(Path("/proc")):
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in BACKENDS:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _busy_s() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def _ours_s() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def machine() -> str:
    """Cores, CPU model, memory, Python, and the date: the table's first line."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kib = _meminfo_kib("MemTotal")
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = Path("/proc/loadavg").read_text().split()[0]
    return (
        f"{os.cpu_count()} cores, {model}, {memory_kib / 1024**2:.0f} GiB; "
        f"Python {platform.python_version()}; {now}; load average at the start {load}"
    )


def _meminfo_kib(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0
