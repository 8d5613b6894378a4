"""The web page at `/`, as a person uses it: submit, watch, cancel, reload, reconnect."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from playwright.async_api import (
    Error,
    Locator,
    Page,
    Request,
    Route,
    WebSocket,
    WebSocketRoute,
    async_playwright,
    expect,
)

from factq.settings import Settings
from factq.state.store import Store
from tests.browser.conftest import DESKTOP, LAUNCH_ARGS
from tests.conftest import make_settings
from tests.support.backends import delete_namespace
from tests.support.service import Service, environment, running_service
from tests.support.waiting import TERMINAL

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.timeout(180)]

DIGITS_OF_1000000_FACTORIAL = "5,565,709 digits"
# The key of the service with keys; long enough for the log watch to look for it.
PAGE_KEY = "k-page-first-message"
# A job of the test tasks that reports progress ten times a second for 20 s.
STEPS_20_S = {"steps": 200, "duration_s": 20}
# Where the page keeps the ids of the jobs it submitted, without a key.
JOBS_STORAGE = "factq.jobs"

# Record the largest progress ever shown in a visible bar: a 1,000,000! job
# runs for about half a second, too short to catch by polling.
WATCH_PROGRESS = """() => {
  window.maxProgressShown = 0;
  const look = () => {
    for (const bar of document.querySelectorAll('[role=progressbar][aria-valuenow]')) {
      if (bar.closest('[hidden]') === null) {
        const value = Number(bar.getAttribute('aria-valuenow'));
        window.maxProgressShown = Math.max(window.maxProgressShown, value);
      }
    }
  };
  new MutationObserver(look).observe(document.body, {
    subtree: true, childList: true, attributes: true, attributeFilter: ['aria-valuenow', 'hidden'],
  });
}"""


@pytest.fixture
def keyed_service(chromium: Path, tmp_path: Path) -> Iterator[tuple[Service, Path]]:
    """A service that needs PAGE_KEY, like `service`; with the folder of its logs."""
    settings = make_settings(api_keys=PAGE_KEY)
    logs = tmp_path / "keyed-logs"
    logs.mkdir()
    try:
        with running_service(settings, logs, concurrency=1) as service:
            yield service, logs
    finally:
        asyncio.run(delete_namespace(settings))


@pytest.fixture
async def other_page(chromium: Path) -> AsyncIterator[Page]:
    """A page in a second, fresh browser profile (its own local storage)."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium, args=LAUNCH_ARGS, headless=True
        )
        try:
            context = await browser.new_context(
                viewport={"width": DESKTOP["width"], "height": DESKTOP["height"]},
                locale="en-US",
                color_scheme="light",
            )
            context.set_default_timeout(15_000)
            context.set_default_navigation_timeout(15_000)
            page = await context.new_page()
            errors: list[Error] = []

            def on_error(error: Error) -> None:
                errors.append(error)

            page.on("pageerror", on_error)
            yield page
            assert not errors, f"script errors on the other page: {errors}"
        finally:
            await browser.close()


def card(page: Page, job_id: str) -> Locator:
    return page.locator(f'li.job[data-job-id="{job_id}"]')


async def expect_live(page: Page) -> None:
    connection = page.locator("#connection")
    await expect(connection).to_have_attribute("data-state", "live", timeout=20_000)
    await expect(connection).to_have_text("Live")


async def submit(page: Page, n: str | int) -> str:
    """Submit n through the form; the id of the job the server made."""
    await page.get_by_label("n (compute n!)").fill(str(n))
    async with page.expect_response(
        lambda r: r.url.endswith("/v1/jobs") and r.request.method == "POST", timeout=10_000
    ) as answer:
        await page.get_by_role("button", name="Compute").click()
    response = await answer.value
    assert response.status == 202, await response.text()
    job_id: str = (await response.json())["id"]
    return job_id


async def submit_task(page: Page, body: dict[str, Any]) -> str:
    """Submit through the form, with the body of another task's job on the way out."""

    async def rewrite(route: Route) -> None:
        if route.request.method == "POST":
            await route.continue_(post_data=json.dumps(body))
        else:
            await route.fallback()

    pattern = re.compile(r"/v1/jobs$")
    await page.route(pattern, rewrite)
    try:
        return await submit(page, 1)
    finally:
        await page.unroute(pattern, rewrite)


def record_listings(page: Page) -> list[str]:
    """The URLs of every `GET /v1/jobs` (the server's list) the page asks for from now on."""
    listings: list[str] = []

    def on_request(request: Request) -> None:
        path = request.url.split("?", 1)[0]
        if request.method == "GET" and path.endswith("/v1/jobs"):
            listings.append(request.url)

    page.on("request", on_request)
    return listings


async def stored_ids(page: Page, name: str = JOBS_STORAGE) -> list[str]:
    ids: list[str] = await page.evaluate(
        "name => JSON.parse(localStorage.getItem(name) || '[]')", name
    )
    return ids


async def wait_for_status(
    http: httpx.AsyncClient, job_id: str, statuses: set[str], timeout_s: float = 20.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job: dict[str, Any] = (await http.get(f"/v1/jobs/{job_id}")).json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
        await asyncio.sleep(0.05)


async def test_jobs_run_live_cancel_and_come_back_after_a_reload(
    service: Service, page: Page, artifacts: Path
) -> None:
    await page.goto(service.base_url)
    await expect_live(page)
    await page.evaluate(WATCH_PROGRESS)

    # A big job, followed live to its end without a reload.
    done_id = await submit(page, 1_000_000)
    done = card(page, done_id)
    await expect(done).to_be_visible()
    await expect(done).to_have_attribute("data-status", "succeeded", timeout=60_000)
    await expect(done.locator(".badge")).to_have_text("Succeeded")
    await expect(done.locator(".digits-count")).to_have_text(DIGITS_OF_1000000_FACTORIAL)
    shown = await page.evaluate("window.maxProgressShown")
    assert shown > 0, "the progress bar never showed progress while the job ran"
    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as http:
        result = (await http.get(f"/v1/jobs/{done_id}")).json()["result"]
        await expect(done.locator(".digits-head")).to_have_text(result["head"])
        await expect(done.locator(".digits-tail")).to_have_text(result["tail"])
        decimal = done.get_by_role("link", name=re.compile(r"as decimal"))
        await expect(decimal).to_have_attribute("href", f"/v1/jobs/{done_id}/result")
        hexadecimal = done.get_by_role("link", name=re.compile(r"as hex"))
        await expect(hexadecimal).to_have_attribute("href", f"/v1/jobs/{done_id}/result?format=hex")
        async with page.expect_download(timeout=30_000) as download:
            await decimal.click()
        saved = await (await download.value).path()
        assert saved.stat().st_size == 5_565_709
        # Only the summary is on the page, never the value's millions of digits.
        assert len(await page.content()) < 100_000

        # A long job holds the only pool process, so the next one waits in the queue.
        hold_id = await submit_task(page, {"task": "steps", "input": STEPS_20_S})
        await wait_for_status(http, hold_id, {"running"})

    # Not 1,000,000! again: its stored result would answer it as it is made.
    cancel_id = await submit(page, 999_999)
    cancelled = card(page, cancel_id)
    await expect(cancelled).to_have_attribute("data-status", "queued")
    await cancelled.get_by_role("button", name="Cancel 999,999!").click()
    await expect(cancelled).to_have_attribute("data-status", "cancelled", timeout=10_000)
    await expect(cancelled.locator(".badge")).to_have_text("Cancelled")
    await expect(cancelled.get_by_role("button")).to_have_count(0)

    # After a reload this browser's jobs come back from the server, newest
    # first, and the running job is followed again.
    listings = record_listings(page)
    await page.reload()
    await expect_live(page)
    await expect(page.locator("li.job")).to_have_count(3)
    order = await page.locator("li.job").evaluate_all("cards => cards.map(c => c.dataset.jobId)")
    assert order == [cancel_id, hold_id, done_id]
    assert await stored_ids(page) == [cancel_id, hold_id, done_id]
    assert listings == [], "the page asked for the server's whole list"
    await expect(card(page, done_id)).to_have_attribute("data-status", "succeeded")
    await expect(card(page, done_id).locator(".digits-count")).to_have_text(
        DIGITS_OF_1000000_FACTORIAL
    )
    await expect(card(page, cancel_id)).to_have_attribute("data-status", "cancelled")
    running = card(page, hold_id)
    await expect(running).to_have_attribute("data-status", "running")
    bar = running.get_by_role("progressbar")
    await expect(bar).to_have_attribute("aria-valuenow", re.compile(r"\d"))
    before = await bar.get_attribute("aria-valuenow")
    await expect(bar).not_to_have_attribute("aria-valuenow", before or "", timeout=5_000)
    # Far enough along for the screenshots to show a bar, not a sliver.
    at_least_30_percent = re.compile(r"^([3-9]\d|100)\.\d$")
    await expect(bar).to_have_attribute("aria-valuenow", at_least_30_percent, timeout=20_000)

    await page.screenshot(
        path=artifacts / "page-desktop.png", full_page=True, animations="disabled"
    )
    await page.set_viewport_size({"width": 375, "height": 800})
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the page scrolls sideways on a phone: {width} px wide"
    await page.screenshot(path=artifacts / "page-phone.png", full_page=True, animations="disabled")

    # Cancelling a running job: asked at once, cancelled within a second.
    await running.get_by_role("button", name="Cancel steps").click()
    await expect(running).to_have_attribute("data-status", "cancelled", timeout=10_000)
    await expect(running.get_by_role("progressbar")).to_be_hidden()


async def test_a_lost_connection_shows_and_catches_up_when_the_api_is_back(
    service: Service, page: Page, e2e_settings: Settings
) -> None:
    await page.goto(service.base_url)
    await expect_live(page)
    job_id = await submit_task(page, {"task": "steps", "input": {"steps": 30, "duration_s": 3}})
    job = card(page, job_id)
    await expect(job).to_have_attribute("data-status", "running", timeout=10_000)

    await asyncio.to_thread(stop_api, service)
    connection = page.locator("#connection")
    await expect(connection).to_have_attribute("data-state", "reconnecting", timeout=10_000)
    await expect(connection).to_have_text("Reconnecting…")
    # The job ends while the page cannot hear about it.
    async with Store.open(e2e_settings) as store:
        deadline = time.monotonic() + 20
        while (await store.jobs.get(job_id)).status not in TERMINAL:
            assert time.monotonic() < deadline, "the job did not finish"
            await asyncio.sleep(0.05)
    await expect(job).to_have_attribute("data-status", "running")

    await asyncio.to_thread(start_api, service, e2e_settings)
    await wait_ready(service)
    await expect_live(page)
    await expect(job).to_have_attribute("data-status", "succeeded", timeout=10_000)


async def test_a_401_asks_for_a_key_once_and_the_page_sends_it_everywhere(
    service: Service, page: Page
) -> None:
    key = "k-browser-test"
    other_key = "k-browser-other"
    # This service runs without keys: these routes answer as one with keys would.
    refused: list[str] = []
    sockets: list[str] = []
    socket_keys: list[str] = []

    async def check_key(route: Route) -> None:
        if route.request.headers.get("authorization") in {f"Bearer {key}", f"Bearer {other_key}"}:
            await route.continue_()
            return
        refused.append(route.request.url)
        error = {"error": {"type": "unauthorized", "message": "this route needs an API key"}}
        await route.fulfill(status=401, json=error, headers={"WWW-Authenticate": "Bearer"})

    async def check_socket_key(socket: WebSocketRoute) -> None:
        """The key is the socket's first message; kept from this keyless server."""
        sockets.append(socket.url)
        server = socket.connect_to_server()
        first = True

        async def from_page(message: str | bytes) -> None:
            nonlocal first
            if not first:
                server.send(message)
                return
            first = False
            token = first_message_token(message)
            if token in {key, other_key}:
                socket_keys.append(token)
            else:
                await socket.close(code=1008, reason="unauthorized")
                await server.close()

        socket.on_message(from_page)

    await page.route(re.compile(r"/v1/"), check_key)
    await page.route_web_socket(re.compile(r"/v1/events"), check_socket_key)
    await page.goto(service.base_url)

    key_input = page.get_by_label("API key", exact=True)
    await expect(key_input).to_be_visible()
    await expect(key_input).to_be_focused()
    await expect(page.get_by_role("heading", name="This server needs an API key")).to_have_count(1)
    await expect(page.locator("#connection")).to_have_text("API key needed")
    assert refused, "the page should have met a 401"
    await key_input.fill(key)
    await page.get_by_role("button", name="Save key").click()
    await expect(key_input).to_be_hidden()
    await expect_live(page)
    assert await page.evaluate("localStorage.getItem('factq.apiKey')") == key

    job_id = await submit(page, 20)
    job = card(page, job_id)
    await expect(job).to_have_attribute("data-status", "succeeded", timeout=30_000)
    await expect(job.locator(".digits")).to_have_text("2432902008176640000")
    assert key in socket_keys, "the page never sent its key as a socket's first message"
    assert sockets and not [url for url in sockets if "token=" in url or key in url], sockets
    # A plain link cannot send the key: the page fetches the file with it instead.
    async with page.expect_download(timeout=10_000) as download:
        await job.get_by_role("link", name=re.compile(r"as decimal")).click()
    assert (await download.value).suggested_filename == "20-factorial.txt"
    saved = await (await download.value).path()
    assert saved.read_text() == "2432902008176640000"

    # The key is remembered: a reload asks nothing and lists the job.
    refused.clear()
    await page.reload()
    await expect_live(page)
    await expect(key_input).to_be_hidden()
    await expect(card(page, job_id)).to_have_attribute("data-status", "succeeded")
    assert refused == []

    # The job ids are kept per key, under a name that is not the key itself.
    lists = "() => Object.keys(localStorage).filter(name => name.startsWith('factq.jobs'))"
    names = await page.evaluate(lists)
    assert len(names) == 1, names
    assert names[0] != JOBS_STORAGE
    assert key not in names[0]
    assert await stored_ids(page, names[0]) == [job_id]

    # Forgetting the key forgets its jobs too; another key starts with none.
    await page.get_by_role("button", name="Forget it").click()
    await expect(key_input).to_be_visible()
    await expect(page.locator("li.job")).to_have_count(0)
    assert await page.evaluate(lists) == []
    await key_input.fill(other_key)
    await page.get_by_role("button", name="Save key").click()
    await expect_live(page)
    await expect(page.locator("li.job")).to_have_count(0)
    other_id = await submit(page, 10)
    await expect(card(page, other_id)).to_have_attribute("data-status", "succeeded")
    await page.reload()
    await expect_live(page)
    await expect(card(page, other_id)).to_have_attribute("data-status", "succeeded")
    await expect(page.locator("li.job")).to_have_count(1)
    assert socket_keys[-1] == other_key
    assert not [url for url in sockets if "token=" in url or other_key in url], sockets


def first_message_token(message: str | bytes) -> str | None:
    """The key of a socket's first message, `{"token": "<key>"}`; None for any other."""
    try:
        data = json.loads(message)
    except ValueError:
        return None
    token = data.get("token") if isinstance(data, dict) else None
    return token if isinstance(token, str) else None


async def test_with_keys_the_socket_gets_the_key_as_its_first_message_not_in_its_url(
    keyed_service: tuple[Service, Path], page: Page
) -> None:
    """Against a server with keys: the key travels in headers and a first message, and
    in no URL the page opens (sockets, API calls, downloads) nor any line the API logs."""
    service, logs = keyed_service
    urls: list[str] = []
    sockets: list[tuple[list[str], list[str]]] = []

    def on_socket(socket: WebSocket) -> None:
        urls.append(socket.url)
        sent: list[str] = []
        received: list[str] = []
        sockets.append((sent, received))
        socket.on("framesent", lambda payload: sent.append(str(payload)))
        socket.on("framereceived", lambda payload: received.append(str(payload)))

    page.on("websocket", on_socket)
    page.on("request", lambda request: urls.append(request.url))
    await page.goto(service.base_url)
    key_input = page.get_by_label("API key", exact=True)
    await expect(key_input).to_be_visible()
    await key_input.fill(PAGE_KEY)
    await page.get_by_role("button", name="Save key").click()
    await expect(key_input).to_be_hidden()
    await expect_live(page)

    job_id = await submit(page, 20)
    job = card(page, job_id)
    # Past queued only through the socket's events: the server took the key.
    await expect(job).to_have_attribute("data-status", "succeeded", timeout=30_000)
    await expect(job.locator(".digits")).to_have_text("2432902008176640000")
    async with page.expect_download(timeout=10_000) as download:
        await job.get_by_role("link", name=re.compile(r"as decimal")).click()
    saved = await (await download.value).path()
    assert saved.read_text() == "2432902008176640000"

    assert urls and not [url for url in urls if "token=" in url or PAGE_KEY in url], urls
    keyed = [(sent, received) for sent, received in sockets if sent]
    assert keyed, "no socket sent anything"
    for sent, _ in keyed:
        assert first_message_token(sent[0]) == PAGE_KEY, sent
    assert any(job_id in frame and '"succeeded"' in frame for _, got in keyed for frame in got)
    api_log = (logs / "api.log").read_text()
    assert "/v1/events" in api_log and "token=" not in api_log


async def test_the_form_checks_n_and_shows_the_servers_422_message(
    service: Service, page: Page
) -> None:
    async def stale_catalogue(route: Route) -> None:
        # A page that believes in a larger limit than the server's, so the
        # server's own 422 is what the person sees.
        response = await route.fetch()
        tasks = await response.json()
        for task in tasks["tasks"]:
            task["limits"]["max_n"] = 2_000_000
        await route.fulfill(response=response, body=json.dumps(tasks))

    await page.route(re.compile(r"/v1/tasks$"), stale_catalogue)
    await page.goto(service.base_url)
    await expect_live(page)
    await expect(page.locator("#max-n")).to_have_text("2,000,000")
    field = page.get_by_label("n (compute n!)")
    alert = page.locator("#n-error")
    compute = page.get_by_role("button", name="Compute")

    for bad in ["", "-5", "12.5", "1e6", "abc"]:
        await field.fill(bad)
        await compute.click()
        await expect(alert).to_have_text("Enter a whole number from 0 to 2,000,000.")
        await expect(field).to_have_attribute("aria-invalid", "true")
    await field.fill("2000001")
    await compute.click()
    await expect(alert).to_have_text("n can be at most 2,000,000 on this server.")
    await expect(page.locator("li.job")).to_have_count(0)

    await field.fill("1,500,000")
    async with page.expect_response(re.compile(r"/v1/jobs$")) as answer:
        await compute.click()
    assert (await answer.value).status == 422
    await expect(alert).to_contain_text("less than or equal to 1000000")
    await expect(page.locator("li.job")).to_have_count(0)

    await field.fill("1 000")
    async with page.expect_response(re.compile(r"/v1/jobs$")) as answer:
        await compute.click()
    assert (await answer.value).status == 202
    await expect(alert).to_be_hidden()
    await expect(page.locator("li.job .job-title")).to_have_text("1,000!")


async def test_each_browser_shows_the_jobs_it_submitted_and_no_others(
    service: Service, page: Page, other_page: Page
) -> None:
    listings = {"a": record_listings(page), "b": record_listings(other_page)}
    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as http:
        # Submitted like curl would: no browser's job, though the same owner's
        # while keys are off.
        body = {"task": "factorial", "input": {"n": 5}}
        plain_id = (await http.post("/v1/jobs", json=body)).json()["id"]
        await wait_for_status(http, plain_id, TERMINAL)

        await page.goto(service.base_url)
        await other_page.goto(service.base_url)
        await expect_live(page)
        await expect_live(other_page)
        # Live comes after the page has restored its jobs: none yet, in either.
        await expect(page.locator("#jobs-empty")).to_be_visible()
        await expect(other_page.locator("#jobs-empty")).to_be_visible()
        await expect(page.locator("li.job")).to_have_count(0)
        await expect(other_page.locator("li.job")).to_have_count(0)

        mine = await submit(page, 20)
        await expect(card(page, mine)).to_have_attribute("data-status", "succeeded")
        await expect(card(page, mine).locator(".digits")).to_have_text("2432902008176640000")
        # A second plain job, submitted while both pages are open.
        plain_later_id = (await http.post("/v1/jobs", json=body)).json()["id"]
        await wait_for_status(http, plain_later_id, TERMINAL)
        theirs = await submit(other_page, 30)
        await expect(card(other_page, theirs)).to_have_attribute("data-status", "succeeded")

        for reloaded in (False, True):
            if reloaded:
                await page.reload()
                await other_page.reload()
                await expect_live(page)
                await expect_live(other_page)
            await expect(card(page, mine)).to_have_attribute("data-status", "succeeded")
            await expect(page.locator("li.job")).to_have_count(1)
            await expect(card(other_page, theirs)).to_have_attribute("data-status", "succeeded")
            await expect(other_page.locator("li.job")).to_have_count(1)
        assert await stored_ids(page) == [mine]
        assert await stored_ids(other_page) == [theirs]
        assert listings == {"a": [], "b": []}, "a page asked for the server's whole list"

        # The list keeps the newest 50 ids; after a reload, the ids whose job
        # answers 404 (here: never jobs at all, and one deleted) are dropped.
        unknown = [uuid4().hex for _ in range(50)]
        await page.evaluate(
            "([name, ids]) => localStorage.setItem(name, JSON.stringify(ids))",
            [JOBS_STORAGE, [mine, *unknown]],
        )
        newest = await submit(page, 25)
        await expect(card(page, newest)).to_have_attribute("data-status", "succeeded")
        assert await stored_ids(page) == [newest, mine, *unknown[:48]]
        assert (await http.delete(f"/v1/jobs/{mine}")).status_code == 204
        await page.reload()
        await expect_live(page)
        await expect(card(page, newest)).to_have_attribute("data-status", "succeeded")
        await expect(page.locator("li.job")).to_have_count(1)
        assert await stored_ids(page) == [newest]


def stop_api(service: Service) -> None:
    api = service.processes["api"]
    api.send_signal(signal.SIGTERM)
    api.wait(timeout=20)


def start_api(service: Service, settings: Settings) -> None:
    """A new `factq api` on the old one's port; `running_service` stops it at the end."""
    port = service.base_url.rsplit(":", 1)[1]
    with open(service.logs / "api-restarted.log", "wb") as log:
        service.processes["api"] = subprocess.Popen(
            [sys.executable, "-m", "factq", "api", "--port", port],
            env=environment(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def wait_ready(service: Service, timeout_s: float = 30.0) -> None:
    async with httpx.AsyncClient(base_url=service.base_url, timeout=2) as http:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if (await http.get("/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"the API did not come back\n{service.log_text()}"
            await asyncio.sleep(0.05)


# The embedding task as the catalogue lists it where its extra is installed;
# this service runs without it, so the page meets it through a routed catalogue.
EMBED_TASK = {
    "name": "embed",
    "description": "Sentence embeddings.",
    "input_schema": {
        "type": "object",
        "properties": {
            "texts": {
                "type": "array",
                "items": {"type": "string", "maxLength": 2000},
                "minItems": 1,
                "maxItems": 64,
                "title": "Texts",
            }
        },
        "required": ["texts"],
        "additionalProperties": False,
    },
    "limits": {"max_texts": 3, "max_chars": 2000},
    "result_formats": ["json", "f32"],
}


async def with_embed_task(page: Page) -> None:
    """Route the catalogue through one that also lists EMBED_TASK, last."""

    async def add_embed(route: Route) -> None:
        response = await route.fetch()
        catalogue = await response.json()
        catalogue["tasks"].append(EMBED_TASK)
        await route.fulfill(response=response, body=json.dumps(catalogue))

    await page.route(re.compile(r"/v1/tasks$"), add_embed)


async def test_the_task_select_builds_each_tasks_form_from_its_schema(
    service: Service, page: Page
) -> None:
    await page.goto(service.base_url)
    await expect_live(page)
    task = page.get_by_label("Task", exact=True)
    await expect(task).to_be_visible()
    await expect(task).to_have_value("factorial")
    names = await task.locator("option").evaluate_all("options => options.map(o => o.value)")
    assert names[0] == "factorial" and "steps" in names, names

    # Another task: a field for each property of its input, the factorial's gone.
    await task.select_option("steps")
    # The form's own fields: a card's title ("steps") labels the card too.
    form = page.locator("#submit-form")
    steps = form.get_by_label("steps", exact=True)
    duration = form.get_by_label("duration_s", exact=True)
    await expect(steps).to_be_visible()
    await expect(duration).to_be_visible()
    await expect(page.get_by_label("n (compute n!)")).to_have_count(0)
    await expect(page.locator("#task-description")).to_have_text(
        "Report progress often, for the throttle."
    )
    await expect(page.locator("#steps-hint")).to_have_text("A whole number from 1 to 100,000.")
    compute = page.get_by_role("button", name="Compute")
    await steps.fill("0")
    await compute.click()
    await expect(page.locator("#steps-error")).to_have_text("steps must be at least 1.")
    await expect(steps).to_have_attribute("aria-invalid", "true")
    await steps.fill("3")
    await duration.fill("61")
    await compute.click()
    await expect(page.locator("#duration_s-error")).to_have_text("Enter a number from 0 to 60.")
    await expect(page.locator("#steps-error")).to_be_hidden()
    await duration.fill("0.3")
    async with page.expect_request(
        lambda r: r.url.endswith("/v1/jobs") and r.method == "POST"
    ) as sent:
        await compute.click()
    body = (await sent.value).post_data_json
    assert body == {"task": "steps", "input": {"steps": 3, "duration_s": 0.3}}
    response = await (await sent.value).response()
    assert response is not None and response.status == 202
    steps_id = (await response.json())["id"]
    # Any other task's summary: its keys and values; its downloads, its formats.
    done = card(page, steps_id)
    await expect(done).to_have_attribute("data-status", "succeeded", timeout=30_000)
    await expect(done.locator(".job-title")).to_have_text("steps")
    await expect(done.locator(".summary dt")).to_have_text(["steps"])
    await expect(done.locator(".summary dd")).to_have_text(["3"])
    await expect(done.locator(".digits")).to_be_hidden()
    await expect(done.locator(".digits-count")).to_be_hidden()
    text = done.get_by_role("link", name=re.compile(r"as text"))
    await expect(text).to_have_attribute("href", f"/v1/jobs/{steps_id}/result")

    # Back to the factorial, chosen in the select: its own form, and its result.
    await task.select_option("factorial")
    await expect(steps).to_have_count(0)
    await expect(page.locator("#max-n")).to_have_text("1,000,000")
    await expect(page.get_by_label("n (compute n!)")).to_have_value("1000000")
    factorial_id = await submit(page, 20)
    job = card(page, factorial_id)
    await expect(job).to_have_attribute("data-status", "succeeded", timeout=30_000)
    await expect(job.locator(".job-title")).to_have_text("20!")
    await expect(job.locator(".digits-count")).to_have_text("19 digits")
    await expect(job.locator(".digits")).to_have_text("2432902008176640000")
    await expect(job.locator(".summary")).to_be_hidden()
    # What was typed for a task is still there when it is chosen again.
    await task.select_option("steps")
    await expect(steps).to_have_value("3")
    await expect(duration).to_have_value("0.3")


async def test_a_list_of_strings_is_a_textarea_one_text_a_line(
    service: Service, page: Page
) -> None:
    await with_embed_task(page)
    sent: list[Any] = []

    async def refuse(route: Route) -> None:
        # The body as the page sent it; the answer as the service would give it.
        sent.append(route.request.post_data_json)
        error = {
            "type": "invalid_input",
            "message": "invalid input for task 'embed': texts: too many",
            "details": [{"loc": "input.texts", "message": "too many"}],
        }
        await route.fulfill(status=422, json={"error": error})

    await page.goto(service.base_url)
    await expect_live(page)
    await page.get_by_label("Task", exact=True).select_option("embed")
    texts = page.get_by_label("texts", exact=True)
    await expect(texts).to_be_visible()
    assert await texts.evaluate("element => element.tagName") == "TEXTAREA"
    await expect(page.locator("#texts-hint")).to_contain_text("One per line")
    await expect(page.locator("#texts-hint")).to_contain_text("At most 3 lines.")
    compute = page.get_by_role("button", name="Compute")
    await compute.click()
    await expect(page.locator("#texts-error")).to_have_text("Enter at least one line.")
    await texts.fill("one\ntwo\nthree\nfour")
    await compute.click()
    await expect(page.locator("#texts-error")).to_have_text("At most 3 lines: this has 4.")

    await page.route(re.compile(r"/v1/jobs$"), refuse)
    await texts.fill("The cat sat.\n\n  \nA dog, barking\n")
    await compute.click()
    await expect(page.locator("#texts-error")).to_have_text(
        "invalid input for task 'embed': texts: too many"
    )
    assert sent == [{"task": "embed", "input": {"texts": ["The cat sat.", "A dog, barking"]}}]
    await expect(page.locator("li.job")).to_have_count(0)


async def test_an_embedding_summary_shows_its_size_and_first_values(
    service: Service, page: Page
) -> None:
    await with_embed_task(page)
    job_id = uuid4().hex
    first = [0.0123456, -0.0456789, 0.1, -0.00001, 0.5, 0.25, -0.125, 0.987654]
    job = {
        "id": job_id,
        "task": "embed",
        "input": {"texts": ["a", "b"]},
        "status": "succeeded",
        "progress": None,
        "cancel_requested": False,
        "created_at": "2026-11-24T22:30:00.123Z",
        "started_at": "2026-11-24T22:30:00.200Z",
        "finished_at": "2026-11-24T22:30:00.300Z",
        "attempts": 1,
        "error": None,
        "result": {
            "dimension": 384,
            "count": 2,
            "first": first,
            "url": f"/v1/jobs/{job_id}/result",
        },
        "metrics": {"queue_s": 0.077, "run_s": 0.1},
    }

    async def answer(route: Route) -> None:
        await route.fulfill(json=job)

    # A job of a task this service lacks, as this browser would have stored it.
    await page.route(re.compile(rf"/v1/jobs/{job_id}$"), answer)
    await page.goto(service.base_url)
    await page.evaluate(
        "([name, ids]) => localStorage.setItem(name, JSON.stringify(ids))",
        [JOBS_STORAGE, [job_id]],
    )
    await page.reload()
    await expect_live(page)
    shown = card(page, job_id)
    await expect(shown).to_have_attribute("data-status", "succeeded")
    await expect(shown.locator(".digits-count")).to_have_text("2 vectors of 384 dimensions")
    await expect(shown.locator(".vector-values")).to_have_text(
        "[0.0123, -0.0457, 0.1000, 0.0000, 0.5000, 0.2500, -0.1250, 0.9877, …]"
    )
    await expect(shown.locator(".vector-note")).to_have_text(
        "The first vector, the first 8 of its 384 values"
    )
    await expect(shown.locator(".digits")).to_be_hidden()
    await expect(shown.locator(".summary")).to_be_hidden()
    as_json = shown.get_by_role("link", name=re.compile(r"as json"))
    await expect(as_json).to_have_attribute("href", f"/v1/jobs/{job_id}/result")
    await expect(as_json).to_have_attribute("download", f"embed-{job_id[:8]}.json")
    as_f32 = shown.get_by_role("link", name=re.compile(r"as float32, 3\.1 kB"))
    await expect(as_f32).to_have_attribute("href", f"/v1/jobs/{job_id}/result?format=f32")
