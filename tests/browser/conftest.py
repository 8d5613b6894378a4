"""Debian's chromium, driven by Playwright, against real `factq api` and `factq worker`."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Error, Page, async_playwright

from factq.settings import Settings
from tests.support.service import ROOT, Service, running_service

CHROMIUM = Path("/usr/bin/chromium")
# No sandbox (containers run as root), nothing that reaches out to the network
# on its own, nothing carried over from another run.
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 900}
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture
def chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing: CI runs the browser tests (apt-get install chromium)")
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); CI=true makes this a failure")


@pytest.fixture
def service(chromium: Path, e2e_settings: Settings, tmp_path: Path) -> Iterator[Service]:
    logs = tmp_path / "logs"
    logs.mkdir()
    # One pool process: a long job holds it, so the next job waits in the queue.
    with running_service(e2e_settings, logs, concurrency=1) as service:
        yield service


@pytest.fixture
async def browser(chromium: Path, tmp_path: Path) -> AsyncIterator[BrowserContext]:
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            tmp_path / "profile",
            executable_path=chromium,
            args=LAUNCH_ARGS,
            headless=True,
            viewport={"width": DESKTOP["width"], "height": DESKTOP["height"]},
            locale="en-US",
            color_scheme="light",
        )
        context.set_default_timeout(15_000)
        context.set_default_navigation_timeout(15_000)
        try:
            yield context
        finally:
            await context.close()


@pytest.fixture
async def page(browser: BrowserContext) -> AsyncIterator[Page]:
    """The browser's page; an uncaught script error fails the test."""
    page = browser.pages[0] if browser.pages else await browser.new_page()
    errors: list[Error] = []

    def on_error(error: Error) -> None:
        errors.append(error)

    page.on("pageerror", on_error)
    yield page
    assert not errors, f"script errors on the page: {errors}"


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
