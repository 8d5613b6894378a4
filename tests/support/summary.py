"""Figures a test reports for the run's summary: the fault and cluster tests'
counts and timelines. A test calls `record_property("figures", text)`; the
summary at the end of the run prints them (tests/conftest.py). This also works
under pytest-xdist, whose processes' own output pytest does not show."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

RecordProperty = Callable[[str, object], None]


def figures_of(reports: Iterable[Any]) -> list[tuple[str, str]]:
    """(test id, figures) of each test's call that recorded figures."""
    return [
        (report.nodeid, str(value))
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", ())
        if name == "figures"
    ]
