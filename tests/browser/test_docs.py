"""Swagger UI at `/docs` and Redoc at `/redoc`, in a browser that can reach
nothing but the API: every file they need comes from the API itself."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import BrowserContext, ConsoleMessage, Page, Request, Route, expect

from tests.support.service import Service

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.timeout(120)]

JOB = {"task": "factorial", "input": {"n": 10}}
# Redoc 2 always asks for this; the page's policy refuses it (see factq.api.docs).
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@dataclass
class OtherHosts:
    """What the pages asked of hosts other than the API's."""

    own: str
    sent: list[str] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)
    policy_errors: list[str] = field(default_factory=list)

    def is_other(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme not in ("data", "blob") and parts.netloc != self.own

    @property
    def refused(self) -> list[str]:
        """Asked for, but stopped by the page's Content-Security-Policy before
        it reached the network (so the route never saw it)."""
        return [url for url in self.requested if url not in self.sent]


@pytest.fixture
async def other_hosts(browser: BrowserContext, service: Service) -> AsyncIterator[OtherHosts]:
    """Every request to another host is aborted and recorded; none may leave."""
    hosts = OtherHosts(own=urlsplit(service.base_url).netloc)

    async def only_the_service(route: Route) -> None:
        if hosts.is_other(route.request.url):
            hosts.sent.append(route.request.url)
            await route.abort("internetdisconnected")
        else:
            await route.continue_()

    def on_request(request: Request) -> None:
        if hosts.is_other(request.url):
            hosts.requested.append(request.url)

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            hosts.policy_errors.append(message.text)

    await browser.route("**/*", only_the_service)
    browser.on("request", on_request)
    browser.on("console", on_console)
    yield hosts
    assert hosts.sent == [], f"the docs sent requests to other hosts: {hosts.sent}"
    # The policy refused only what the test expected, and broke nothing else.
    for error in hosts.policy_errors:
        assert any(url in error for url in hosts.refused), error


async def test_swagger_ui_lists_the_operations_and_runs_one(
    service: Service, other_hosts: OtherHosts, page: Page, artifacts: Path
) -> None:
    await page.goto(f"{service.base_url}/docs")
    await expect(page.get_by_role("heading", name="factq")).to_be_visible()
    submit = page.locator(".opblock-post").filter(
        has=page.locator('.opblock-summary-path[data-path="/v1/jobs"]')
    )
    await expect(submit).to_be_visible()
    await expect(submit).to_contain_text("Submit a job")
    # Every route of the OpenAPI document, /metrics among them.
    await expect(page.locator(".opblock")).to_have_count(15)

    await submit.locator(".opblock-summary-control").click()
    await submit.get_by_role("button", name="Try it out").click()
    await submit.locator("textarea.body-param__text").fill(json.dumps(JOB))
    async with page.expect_response(
        lambda r: r.url == f"{service.base_url}/v1/jobs" and r.request.method == "POST"
    ) as answer:
        await submit.get_by_role("button", name="Execute").click()
    assert (await answer.value).status == 202, await (await answer.value).text()
    # The table of what the server answered, below its header row.
    answered = submit.locator(".live-responses-table td:not(.col_header)")
    await expect(answered.and_(page.locator(".response-col_status"))).to_have_text(
        "202", timeout=10_000
    )
    await expect(answered.and_(page.locator(".response-col_description"))).to_contain_text(
        '"status": "queued"'
    )

    await page.screenshot(
        path=artifacts / "docs-swagger.png", full_page=True, animations="disabled"
    )
    assert other_hosts.requested == []


async def test_redoc_shows_the_api_and_its_operations(
    service: Service, other_hosts: OtherHosts, page: Page, artifacts: Path
) -> None:
    await page.goto(f"{service.base_url}/redoc")
    await expect(page.get_by_role("heading", name="factq (0.1.0)", level=1)).to_be_visible()
    await expect(page.get_by_role("menuitem", name="jobs")).to_be_visible()
    submit = page.get_by_role("heading", name="Submit a job", level=2)
    await expect(submit).to_be_visible()
    await expect(page.get_by_role("heading", name="Download a job's full result")).to_have_count(1)
    await expect(page.get_by_role("heading", name="Response samples")).not_to_have_count(0)

    await page.screenshot(path=artifacts / "docs-redoc.png", animations="disabled")
    assert other_hosts.sent == []
    assert set(other_hosts.refused) <= {REDOC_LOGO}
