"""Where redis-py meets factq: a busy pool is not a Redis outage."""

from __future__ import annotations

import asyncio

import pytest

from factq.errors import BackendUnavailable, Overloaded
from factq.settings import Settings
from factq.state import connection
from factq.state.connection import backend_errors, connect
from tests.conftest import make_settings
from tests.support.waiting import until


async def test_a_pool_with_no_free_connection_is_overloaded_not_unavailable(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "POOL_WAIT_S", 0.2)
    client = connect(settings, max_connections=1)
    ping = backend_errors(client.ping)
    try:
        await ping()  # Redis answers

        # The one connection is held by a blocking read that outlasts the pool's wait.
        async def hold() -> None:
            await client.blpop([f"{settings.namespace}:never"], timeout=2)

        holder = asyncio.create_task(hold())
        # Until the read has taken the pool's one connection.
        await until(lambda: not client.connection_pool.can_get_connection())
        with pytest.raises(Overloaded) as raised:
            await ping()
        assert raised.value.type == "overloaded" and raised.value.retry_after_s == 1
        await holder
    finally:
        await client.aclose()


async def test_redis_down_is_unavailable() -> None:
    # Nothing is written there: no namespace to delete.
    client = connect(make_settings(redis_url="redis://127.0.0.1:1/0"), max_connections=1)
    try:
        with pytest.raises(BackendUnavailable) as raised:
            await backend_errors(client.ping)()
        assert type(raised.value) is BackendUnavailable
    finally:
        await client.aclose()
