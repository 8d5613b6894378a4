"""Proxy headers are believed only from the proxies named in FACTQ_FORWARDED_ALLOW_IPS,
so that a client cannot choose its own address, and with it its rate-limit bucket."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from factq.settings import Settings
from tests.conftest import factq_server

JOB = {"task": "factorial", "input": {"n": 5}}


async def statuses_from_many_addresses(settings: Settings) -> list[int]:
    """Four submissions, each claiming another client address."""
    async with factq_server(settings) as (_, address), httpx.AsyncClient() as http:
        answers = [
            await http.post(
                f"http://{address}/v1/jobs", json=JOB, headers={"X-Forwarded-For": f"203.0.113.{i}"}
            )
            for i in range(4)
        ]
    return [answer.status_code for answer in answers]


async def test_forwarded_addresses_are_not_believed_by_default(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(rate_limit="2/minute")
    assert await statuses_from_many_addresses(settings) == [202, 202, 429, 429]


async def test_forwarded_addresses_are_believed_from_a_named_proxy(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(rate_limit="2/minute", forwarded_allow_ips="127.0.0.1")
    assert await statuses_from_many_addresses(settings) == [202, 202, 202, 202]
