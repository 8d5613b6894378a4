"""Live streams per caller: WebSockets and SSE streams open at once, per key (per
client address when keys are off), in one API process.

Each open stream holds memory and a connection for as long as the client
likes; `FACTQ_MAX_STREAMS_PER_CALLER` keeps one caller from holding them all.
The count is per API process: behind N processes a caller may hold N times
the cap, which still bounds each process.
"""

from __future__ import annotations

from collections import Counter
from typing import Final

from starlette.requests import HTTPConnection

from factq.errors import RateLimited

# A stream frees its slot when it closes; a client that retries a second
# later usually finds one.
RETRY_AFTER_S: Final = 1


def caller_of(connection: HTTPConnection, owner: str) -> str:
    """Whom a stream counts against: its key's owner, or its address with keys off."""
    if owner:
        return owner
    host = connection.client.host if connection.client else "unknown"
    return f"address:{host}"


class Slot:
    """One open stream of one caller; `release` once it ends (twice is harmless)."""

    def __init__(self, slots: StreamSlots, caller: str) -> None:
        self._slots = slots
        self._caller = caller
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots.release(self._caller)


class StreamSlots:
    """The open streams of each caller in this process, at most `limit` each."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._open: Counter[str] = Counter()

    def acquire(self, caller: str) -> Slot:
        """A slot for one more stream, or `RateLimited` when the caller has none left."""
        if self._open[caller] >= self._limit:
            raise RateLimited(
                f"{self._open[caller]} event streams open; at most {self._limit} per key "
                "(FACTQ_MAX_STREAMS_PER_CALLER): close one, or follow many jobs on one "
                "WebSocket at /v1/events",
                retry_after_s=RETRY_AFTER_S,
            )
        self._open[caller] += 1
        return Slot(self, caller)

    def release(self, caller: str) -> None:
        self._open[caller] -= 1
        if self._open[caller] <= 0:
            del self._open[caller]

    def open_streams(self, caller: str) -> int:
        return self._open[caller]
