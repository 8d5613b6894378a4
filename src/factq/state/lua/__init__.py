"""The Lua scripts that make each change of a job's state one atomic step."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Final, Protocol, TypeVar

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
