"""The Lua scripts that make each change of a job's state one atomic step."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any, Final, Protocol, TypeVar

import redis.asyncio as redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

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


# One script call: the script, its keys and its arguments.
Call = tuple[AsyncScript, Sequence[Any], Sequence[Any]]


async def run_pipelined(client: redis.Redis, calls: Sequence[Call]) -> list[Any]:
    """Run the calls in one round trip and return their replies, in order.

    Each call goes as EVALSHA alone: redis-py's own pipelining of scripts asks
    Redis whether every script exists first, a round trip more each time. A
    call Redis does not know the script of (its cache is empty after a
    restart) did not run, and is run again on its own, loading its script.
    """
    async with client.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    for i, reply in enumerate(replies):
        if isinstance(reply, NoScriptError):
            script, keys, args = calls[i]
            replies[i] = await script(keys=keys, args=args)
        elif isinstance(reply, Exception):
            raise reply
    return replies
