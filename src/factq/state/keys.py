"""Every Redis key factq uses, derived from the namespace (the AMQP names are
`factq.broker.QueueNames`).

One job's keys share the `{job_id}` hash tag, so that on Redis Cluster each
state-change script touches a single slot.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """Redis keys for one deployment (or one test run), from `FACTQ_NAMESPACE`."""

    namespace: str

    def job(self, job_id: str) -> str:
        return f"{self.namespace}:job:{{{job_id}}}"

    def job_keys(self, job_id: str) -> list[str]:
        """The keys every state-change script of a job takes first: its hash and its stream."""
        return [self.job(job_id), self.events(job_id)]

    def events(self, job_id: str) -> str:
        return f"{self.namespace}:events:{{{job_id}}}"

    def result(self, job_id: str, fmt: str) -> str:
        return f"{self.namespace}:result:{{{job_id}}}:{fmt}"

    def upload(self, job_id: str, token: str) -> str:
        """A result being received (the update route), in the job's slot."""
        return f"{self.namespace}:upload:{{{job_id}}}:{token}"

    def owner_jobs(self, owner: str) -> str:
        """Sorted set of an owner's job ids, scored by submission order."""
        return f"{self.namespace}:owner:{owner or '-'}:jobs"

    def owner_active(self, owner: str) -> str:
        """Set of an owner's jobs that may still be queued or running."""
        return f"{self.namespace}:owner:{owner or '-'}:active"

    def idempotency(self, owner: str, key_digest: str) -> str:
        """Which job an owner's Idempotency-Key created, and for which request."""
        return f"{self.namespace}:idempotency:{owner or '-'}:{key_digest}"

    def cached(self, task: str, input_digest: str) -> str:
        """The job whose outcome answers this task on this input (deterministic tasks)."""
        return f"{self.namespace}:cache:{task}:{input_digest}"

    def computing(self, task: str, input_digest: str) -> str:
        """The lease of the job computing this task on this input now."""
        return f"{self.namespace}:computing:{task}:{input_digest}"

    def owner_counter(self, owner: str) -> str:
        return f"{self.namespace}:owner:{owner or '-'}:count"

    @property
    def events_channel(self) -> str:
        return f"{self.namespace}:events"

    @property
    def webhooks(self) -> str:
        """Stream of webhook deliveries waiting to be sent, read by a consumer group."""
        return f"{self.namespace}:webhooks"

    @property
    def control_channel(self) -> str:
        return f"{self.namespace}:control"
