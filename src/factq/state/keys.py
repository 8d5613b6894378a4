"""Every Redis key factq uses, derived from the namespace (the AMQP names are
`factq.broker.QueueNames`).

On Redis Cluster a script may only touch keys of one slot. So a job's keys
do not carry the job's own id as their hash tag but its shard's: one of
SHARDS tags, each with its webhook delivery stream and, on a cluster, its
events channel (sharded pub/sub), so that the script that changes a job also
queues its webhook delivery and publishes its event. The shards' tags are
chosen to fall evenly across the slot space, and so across the masters.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import cache
from typing import Final

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

# How many slots a deployment's jobs are spread over. Fixed: a job's keys are
# found from its id through it.
SHARDS: Final = 16


@cache
def shard_tags(namespace: str) -> tuple[str, ...]:
    """Each shard's hash tag: `{namespace}.{shard}.{n}` with the first n that
    puts shard i in the i-th of SHARDS equal ranges of slots."""
    span = REDIS_CLUSTER_HASH_SLOTS // SHARDS
    tags = []
    for shard in range(SHARDS):
        n = 0
        while key_slot(f"{namespace}.{shard}.{n}".encode()) // span != shard:
            n += 1
        tags.append(f"{namespace}.{shard}.{n}")
    return tuple(tags)


def shard_of(job_id: str) -> int:
    return zlib.crc32(job_id.encode()) % SHARDS


@dataclass(frozen=True, slots=True)
class Keys:
    """Redis keys for one deployment (or one test run), from `FACTQ_NAMESPACE`.

    `cluster`: events go out on each shard's channel (SPUBLISH, read with
    SSUBSCRIBE) instead of the namespace's one channel."""

    namespace: str
    cluster: bool = False
    _tags: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tags", shard_tags(self.namespace))

    def tag(self, job_id: str) -> str:
        """The hash tag of the job's keys: its shard's."""
        return self._tags[shard_of(job_id)]

    def job(self, job_id: str) -> str:
        return f"{self.namespace}:job:{{{self.tag(job_id)}}}:{job_id}"

    def job_keys(self, job_id: str) -> list[str]:
        """The keys every state-change script of a job takes first: its hash and its stream."""
        return [self.job(job_id), self.events(job_id)]

    def events(self, job_id: str) -> str:
        return f"{self.namespace}:events:{{{self.tag(job_id)}}}:{job_id}"

    def result(self, job_id: str, fmt: str) -> str:
        return f"{self.namespace}:result:{{{self.tag(job_id)}}}:{job_id}:{fmt}"

    def upload(self, job_id: str, token: str) -> str:
        """A result being received (the update route), in the job's slot."""
        return f"{self.namespace}:upload:{{{self.tag(job_id)}}}:{job_id}:{token}"

    def _owner(self, owner: str) -> str:
        # An owner's keys share its hash tag: one script indexes its jobs.
        return f"{self.namespace}:owner:{{{self.namespace}.{owner or '-'}}}"

    def owner_jobs(self, owner: str) -> str:
        """Sorted set of an owner's job ids, scored by submission order."""
        return f"{self._owner(owner)}:jobs"

    def owner_active(self, owner: str) -> str:
        """Set of an owner's jobs that may still be queued or running."""
        return f"{self._owner(owner)}:active"

    def owner_counter(self, owner: str) -> str:
        return f"{self._owner(owner)}:count"

    def idempotency(self, owner: str, key_digest: str) -> str:
        """Which job an owner's Idempotency-Key created, and for which request."""
        return f"{self.namespace}:idempotency:{owner or '-'}:{key_digest}"

    def cached(self, task: str, input_digest: str) -> str:
        """The job whose outcome answers this task on this input (deterministic tasks)."""
        return f"{self.namespace}:cache:{task}:{input_digest}"

    def computing(self, task: str, input_digest: str) -> str:
        """The lease of the job computing this task on this input now."""
        return f"{self.namespace}:computing:{task}:{input_digest}"

    def events_channel(self, job_id: str) -> str:
        """Where the job's events are published: its shard's channel on a
        cluster (a channel with a hash tag is published with SPUBLISH)."""
        if self.cluster:
            return f"{self.namespace}:events:{{{self.tag(job_id)}}}"
        return f"{self.namespace}:events"

    @property
    def events_channels(self) -> list[str]:
        """Every channel events are published on."""
        if self.cluster:
            return [f"{self.namespace}:events:{{{tag}}}" for tag in self._tags]
        return [f"{self.namespace}:events"]

    def webhooks(self, job_id: str) -> str:
        """The stream of webhook deliveries of the job's shard, read by a consumer group."""
        return self.webhook_streams[shard_of(job_id)]

    @property
    def webhook_streams(self) -> list[str]:
        return [f"{self.namespace}:webhooks:{{{tag}}}" for tag in self._tags]

    @property
    def control_channel(self) -> str:
        return f"{self.namespace}:control"
