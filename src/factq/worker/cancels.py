"""Cancels of running jobs: each held job's cancel signal, set when its cancel
is asked, whether the control channel says so or the periodic check finds it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from factq.aio import cancel_and_wait
from factq.errors import BackendUnavailable
from factq.state.store import Store

logger = logging.getLogger(__name__)

# Pub/sub can drop a message: the held jobs' flags are read this often too.
CANCEL_CHECK_INTERVAL_S: Final = 1.0
RESUBSCRIBE_AFTER_S: Final = 1.0


class CancelAsked(Exception):
    """The job's cancel was asked while it ran; its computation was stopped."""


@dataclass(slots=True)
class HeldJob:
    """A job whose message this worker holds: the task running it, and its cancel signal."""

    task: asyncio.Task[None]
    cancel: asyncio.Event = field(default_factory=asyncio.Event)


class CancelWatcher:
    """Sets the cancel signal of each held job whose cancel is asked."""

    def __init__(self, store: Store, held: Mapping[str, HeldJob]) -> None:
        self._store = store
        self._held = held

    async def run(self, listening: asyncio.Event) -> None:
        """Watch until cancelled; `listening` is set once no cancel can be missed."""
        listener = asyncio.create_task(self._listen(listening))
        try:
            while True:
                await asyncio.sleep(CANCEL_CHECK_INTERVAL_S)
                if self._held:
                    await self._check_flags()
        finally:
            await cancel_and_wait({listener})

    async def _check_flags(self) -> None:
        try:
            asked = await self._store.jobs.cancel_requested(list(self._held))
        except BackendUnavailable as exc:
            logger.debug("cancel flags not read, Redis is unavailable: %s", exc)
            return
        for job_id in asked:
            self._cancel(job_id)

    async def _listen(self, listening: asyncio.Event) -> None:
        while True:
            try:
                async for job_id in self._store.events.control_messages(listening):
                    self._cancel(job_id)
            except BackendUnavailable as exc:
                logger.debug("control channel lost (%s); subscribing again", exc)
                await asyncio.sleep(RESUBSCRIBE_AFTER_S)

    def _cancel(self, job_id: str) -> None:
        held = self._held.get(job_id)
        if held is not None:
            held.cancel.set()
