"""Progress reports from inside a pool process, straight to Redis.

A task function that takes a `report` argument gets a callable that records
its progress (0..1) with the same atomic script as every other change, over
the pool process's own Redis connection, at most about ten times a second.
Progress is best effort: a failed report never fails the job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Final

import redis

from factq.state import lua
from factq.state.connection import connect_blocking
from factq.state.keys import Keys

logger = logging.getLogger(__name__)

Report = Callable[[float], None]

MIN_INTERVAL_S: Final = 0.1
REPORT_TIMEOUT_S: Final = 2.0


class ProgressReporter:
    """One per pool process; `for_job` makes the callable a task receives."""

    def __init__(self, redis_url: str, namespace: str, *, cluster: bool = False) -> None:
        # Short timeouts: a report waits inside the computation, and is worth less.
        self._redis = connect_blocking(redis_url, timeout_s=REPORT_TIMEOUT_S, cluster=cluster)
        self._script = self._redis.register_script(lua.script("progress"))
        self._keys = Keys(namespace, cluster=cluster)

    def for_jobs(self, job_ids: Sequence[str]) -> Report:
        """The callable for a call that runs these jobs together (a batch):
        each gets the same progress."""
        if len(job_ids) == 1:
            return self.for_job(job_ids[0])
        reports = [self.for_job(job_id) for job_id in job_ids]

        def report(fraction: float) -> None:
            for each in reports:
                each(fraction)

        return report

    def for_job(self, job_id: str, min_interval_s: float = MIN_INTERVAL_S) -> Report:
        keys = [self._keys.job(job_id), self._keys.events(job_id)]
        channel = self._keys.events_channel(job_id)
        last_sent = float("-inf")
        last_fraction = -1.0

        def report(fraction: float) -> None:
            nonlocal last_sent, last_fraction
            fraction = round(min(max(float(fraction), 0.0), 1.0), 4)
            now = time.monotonic()
            if fraction <= last_fraction or now - last_sent < min_interval_s:
                return
            last_sent, last_fraction = now, fraction
            try:
                self._script(keys=keys, args=[channel, fraction])
            except redis.RedisError as exc:
                logger.warning("progress of job %s not recorded: %s", job_id, exc)

        return report
