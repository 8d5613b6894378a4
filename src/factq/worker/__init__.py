"""The worker: consumes jobs from RabbitMQ and runs them in a process pool.

`Worker` is imported on first use: a pool process imports `factq.worker.pool`
and needs none of the consumer's modules (aio-pika, webhooks, httpx).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from factq.worker.runner import Worker

__all__ = ["Worker"]


def __getattr__(name: str) -> Any:
    if name == "Worker":
        from factq.worker.runner import Worker

        return Worker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
