"""Riding out a Redis outage while a job's message stays held."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from factq.errors import BackendUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_DELAY_S = 0.1
MAX_DELAY_S = 5.0


async def retry_backend(operation: Callable[[], Awaitable[T]], stop: asyncio.Event) -> T:
    """Run operation until Redis answers, backing off; give up only on stop.

    The message stays unacknowledged meanwhile: rejecting it would count
    toward the delivery limit and could dead-letter a healthy job.
    """
    delay = FIRST_DELAY_S
    while True:
        try:
            return await operation()
        except BackendUnavailable:
            if stop.is_set():
                raise
            logger.warning("Redis is unavailable; retrying in %.1f s", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)
