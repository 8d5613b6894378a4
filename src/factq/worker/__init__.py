"""The worker: consumes jobs from RabbitMQ and runs them in a process pool."""

from factq.worker.runner import Worker

__all__ = ["Worker"]
