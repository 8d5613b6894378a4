"""The Lua scripts that make each change of a job's state one atomic step."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any, Final, Protocol, TypeVar

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from factq.errors import BackendUnavailable

# Every script the store runs (`progress` runs in pool processes, on their own clients).
STORE_SCRIPTS: Final = (
    "create",
    "confirm",
    "start",
    "finish",
    "cancel",
    "delete",
    "lost",
    "webhook_log",
    "idempotency",
    "finish_from",
    "computation",
    "owner_index",
)

S = TypeVar("S", covariant=True)


class _Registers(Protocol[S]):
    def register_script(self, script: str) -> S: ...


@cache
def script(name: str) -> str:
    """The named script, with the shared prelude (helpers and conventions) before it."""
    folder = resources.files(__name__)
    return (folder / "prelude.lua").read_text() + "\n" + (folder / f"{name}.lua").read_text()


def register(client: _Registers[S], names: tuple[str, ...] = STORE_SCRIPTS) -> dict[str, S]:
    """The scripts registered on client (each loaded into Redis on first use), by name."""
    return {name: client.register_script(script(name)) for name in names}


# One call: a script (or the name of a plain command), its keys and its arguments.
Call = tuple[AsyncScript | str, Sequence[Any], Sequence[Any]]


# How long a change waits for FACTQ_REDIS_MIN_REPLICAS replicas to have it.
REPLICA_WAIT_MS: Final = 5_000


class ReplicasBehind(BackendUnavailable):
    """A change reached its master, but not the replicas it must reach in time."""


async def _replies(client: redis.Redis, calls: Sequence[Call], replicas: int = 0) -> list[Any]:
    """The calls' replies in one round trip, an error reply in its call's place.

    Each call goes as EVALSHA alone: redis-py's own pipelining of scripts asks
    Redis whether every script exists first, a round trip more each time. A
    call Redis does not know the script of (its cache is empty after a
    restart, or on a replica promoted by a failover: scripts are not copied)
    did not run, and is sent again with the script's text (EVAL, which also
    loads it).

    With `replicas`, a round that runs a script ends with WAIT on each master
    it wrote to, on the connection that wrote: `ReplicasBehind` unless that
    many replicas have every change.
    """
    replies = await _round(client, calls, replicas, by_text=False)
    unknown = [
        i
        for i, reply in enumerate(replies)
        if isinstance(reply, NoScriptError) and not isinstance(calls[i][0], str)
    ]
    if unknown:
        again = await _round(client, [calls[i] for i in unknown], replicas, by_text=True)
        for i, reply in zip(unknown, again, strict=True):
            replies[i] = reply
    return replies


async def _round(
    client: redis.Redis, calls: Sequence[Call], replicas: int, *, by_text: bool
) -> list[Any]:
    writes = False
    async with client.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            if isinstance(script, str):
                pipe.execute_command(script, *keys, *args)
            else:
                # As raw commands: a cluster client's pipeline refuses its evalsha
                # method (it cannot know the script's keys), not the command.
                writes = True
                command = ("EVAL", script.script) if by_text else ("EVALSHA", script.sha)
                pipe.execute_command(*command, len(keys), *keys, *args)
        waits = 0
        if replicas and writes:
            for target in _masters(client, calls):
                pipe.execute_command("WAIT", replicas, REPLICA_WAIT_MS, **target)
                waits += 1
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    if waits:
        acked = replies[len(calls) :]
        replies = replies[: len(calls)]
        failed = next((count for count in acked if isinstance(count, Exception)), None)
        if failed is not None:
            raise failed
        if any(count < replicas for count in acked):
            raise ReplicasBehind(
                f"Redis did not copy the change to {replicas} replica(s) within "
                f"{REPLICA_WAIT_MS / 1000:g} s"
            )
    return replies


def _masters(client: redis.Redis, calls: Sequence[Call]) -> list[dict[str, Any]]:
    """Where the calls' WAITs go: nowhere special on one server; on a cluster,
    to each master that a script of the calls runs on."""
    if not isinstance(client, RedisCluster):
        return [{}]
    nodes: dict[str, Any] = {}
    for script, keys, _ in calls:
        if not isinstance(script, str) and keys:
            node = client.get_node_from_key(keys[0])
            nodes[node.name] = node
    return [{"target_nodes": node} for node in nodes.values()]


class Pipeliner:
    """Calls (scripts, and plain commands) that concurrent requests make in the
    same turn of the event loop go to Redis together, in one pipeline (what ioredis calls
    auto-pipelining): one round trip and one pooled connection for all of
    them, where each would take its own. A call's error reply fails only the
    request that made it; a lost connection fails them all."""

    def __init__(self, client: redis.Redis, replicas: int = 0) -> None:
        self._client = client
        self._replicas = replicas
        self._waiting: list[tuple[Sequence[Call], asyncio.Future[list[Any]]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def run(self, calls: Sequence[Call]) -> list[Any]:
        """The calls' replies, in order; the first error reply among them is raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)
        self._waiting.append((calls, future))
        return await future

    def _flush(self) -> None:
        batch, self._waiting = self._waiting, []
        task = asyncio.ensure_future(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[Sequence[Call], asyncio.Future[list[Any]]]]) -> None:
        try:
            replies = await _replies(
                self._client, [call for calls, _ in batch for call in calls], self._replicas
            )
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for calls, future in batch:
            mine, start = replies[start : start + len(calls)], start + len(calls)
            if future.done():
                continue  # its request went away; its calls ran all the same
            error = next((reply for reply in mine if isinstance(reply, Exception)), None)
            if error is None:
                future.set_result(mine)
            else:
                future.set_exception(error)
