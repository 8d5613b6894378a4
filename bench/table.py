"""The suite's one table: each factq figure beside its floor, the ratio, the issue's target."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

COLUMNS = (
    "",
    "measure",
    "factq",
    "floor",
    "ratio",
    "target",
    "meets target",
    "load client CPU per request (factq / floor)",
)


@dataclass(frozen=True)
class Row:
    key: str
    measure: str
    factq: str
    floor: str = "-"
    ratio: str = "-"
    target: str = "-"
    meets: bool | None = None
    client_cpu: str = "-"

    def cells(self) -> tuple[str, ...]:
        meets = "-" if self.meets is None else ("yes" if self.meets else "**no**")
        return (
            self.key,
            self.measure,
            self.factq,
            self.floor,
            self.ratio,
            self.target,
            meets,
            self.client_cpu,
        )


def compared(
    key: str,
    measure: str,
    value: float | None,
    floor: float | None,
    show: Callable[[float], str],
    *,
    at_least: float | None = None,
    at_most: float | None = None,
    client_cpu: str = "-",
) -> Row:
    """A factq figure beside its floor; the target bounds the ratio factq / floor."""
    target = "-"
    if at_least is not None:
        target = f">= {at_least:g}x"
    elif at_most is not None:
        target = f"<= {at_most:g}x"
    if value is None:
        return Row(key, measure, "failed", _shown(floor, show), "-", target, False, client_cpu)
    if floor is None or floor <= 0:
        return Row(key, measure, show(value), "failed", "-", target, None, client_cpu)
    ratio = value / floor
    meets = None
    if at_least is not None:
        meets = ratio >= at_least
    elif at_most is not None:
        meets = ratio <= at_most
    return Row(key, measure, show(value), show(floor), f"{ratio:.2f}x", target, meets, client_cpu)


def _shown(value: float | None, show: Callable[[float], str]) -> str:
    return "failed" if value is None else show(value)


def render(rows: Sequence[Row]) -> str:
    """A markdown table, its columns padded to line up in a terminal too."""
    lines = [COLUMNS, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]

    def joined(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([joined(lines[0]), rule, *(joined(line) for line in lines[1:])])


def median(samples: Sequence[float]) -> float | None:
    return statistics.median(samples) if samples else None


def percentile(samples: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile: the smallest sample with at least `fraction` of them at or below."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def per_second(value: float) -> str:
    return f"{value:,.0f}/s"


def millis(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds * 1000:,.0f} ms"


def seconds(value: float) -> str:
    return f"{value:.2f} s"


def kib(value: float) -> str:
    return f"{value:.1f} KiB"


def micros(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} µs"


def cpu_per(cpu_s: float, count: int) -> str:
    """The load client's CPU per request, or '-' when nothing was counted."""
    return micros(cpu_s / count) if count else "-"
