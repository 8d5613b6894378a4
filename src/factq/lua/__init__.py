"""The Lua scripts that make each change of a job's state one atomic step."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def script(name: str) -> str:
    """The named script, with the shared prelude (helpers and conventions) before it."""
    folder = resources.files(__name__)
    return (folder / "prelude.lua").read_text() + "\n" + (folder / f"{name}.lua").read_text()
