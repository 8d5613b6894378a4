"""Fixtures: each test gets its own namespace on the real local Redis and RabbitMQ."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from factq.api import create_app
from factq.api.server import Server
from factq.broker import Broker
from factq.cli.serve import server_config
from factq.settings import Settings
from factq.state.store import Store
from factq.tasks import TaskRegistry
from factq.worker import Worker
from tests.support import secrets_watch
from tests.support.backends import delete_namespace
from tests.support.redis_server import RedisServer, redis_server
from tests.support.service import free_port
from tests.support.summary import figures_of

pytest_plugins = ["tests.support.timeouts", "tests.support.parallel"]

TEST_TASKS = "tests.support.tasks"
# What a test's worker serves unless the test says otherwise: every task but
# the models, whose loading takes seconds a worker start should not pay.
MODEL_TASKS = frozenset({"embed", "broken_model"})


@functools.cache
def worker_tasks(task_modules: str) -> str:
    """Every task of a deployment with these task modules, but the models."""
    registry = TaskRegistry.from_settings(Settings(task_modules=task_modules))
    return ",".join(name for name in registry if name not in MODEL_TASKS)


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "namespace": f"test-{uuid4().hex[:12]}",
        "task_modules": TEST_TASKS,
        "concurrency": 2,
        "shutdown_grace_s": 5.0,
    }
    values.update(overrides)
    values.setdefault("worker_tasks", worker_tasks(values["task_modules"]))
    settings = Settings(**values)
    secrets_watch.remember(settings)
    return settings


NO_SECRET = "the run configured no secret to look for"
SECRETS_CONFIGURED = "factq_secrets_configured"
# Filled in pytest-xdist's controller, one count for each worker.
secrets_in_workers: list[int] = []


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log(request: pytest.FixtureRequest) -> Iterator[None]:
    """Across the whole run: no configured secret in any log line (see secrets_watch)."""
    recorder = secrets_watch.LogRecorder()
    loggers = [logging.getLogger(name) for name in ("", "uvicorn.error", "uvicorn.access")]
    root_level = loggers[0].level
    loggers[0].setLevel(logging.INFO)
    for logger in loggers:
        logger.addHandler(recorder)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(recorder)
        loggers[0].setLevel(root_level)
    leaks = secrets_watch.leaks(recorder.lines)
    workeroutput = getattr(request.config, "workeroutput", None)
    if workeroutput is not None:
        # One process of several (pytest-xdist): the controller adds them up.
        workeroutput[SECRETS_CONFIGURED] = len(secrets_watch.secrets)
    else:
        assert secrets_watch.secrets or not whole_suite(request.config), NO_SECRET
    assert not leaks, "secrets in the logs:\n" + "\n".join(leaks[:20])


def whole_suite(config: pytest.Config) -> bool:
    """Whether this run is the whole suite: a part (one file, say) may configure no secret."""
    return config.args_source == pytest.Config.ArgsSource.TESTPATHS and not (
        config.option.keyword or config.option.markexpr
    )


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """In pytest-xdist's controller: how many secrets each worker's tests configured."""
    secrets_in_workers.append(int(getattr(node, "workeroutput", {}).get(SECRETS_CONFIGURED, 0)))


def pytest_sessionfinish(session: pytest.Session) -> None:
    if secrets_in_workers and not sum(secrets_in_workers) and whole_suite(session.config):
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(NO_SECRET, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
async def settings_factory() -> AsyncIterator[Callable[..., Settings]]:
    """Settings with overrides, each in its own namespace, deleted after the test."""
    made: list[Settings] = []

    def make(**overrides: Any) -> Settings:
        made.append(make_settings(**overrides))
        return made[-1]

    yield make
    for settings in made:
        await delete_namespace(settings)


@pytest.fixture
def e2e_settings() -> Iterator[Settings]:
    """Settings for real api and worker processes (sync tests), cleaned up after."""
    settings = make_settings()
    yield settings
    asyncio.run(delete_namespace(settings))


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, for tests that count every key written:
    on the shared server, only a walk of the whole keyspace could tell."""
    with redis_server(tmp_path / "redis") as server:
        yield server


@pytest.fixture
async def settings() -> AsyncIterator[Settings]:
    settings = make_settings()
    yield settings
    await delete_namespace(settings)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    async with Store.open(settings) as store:
        yield store


@pytest.fixture
async def broker(settings: Settings) -> AsyncIterator[Broker]:
    async with Broker.open(
        settings, tasks=list(TaskRegistry.from_settings(settings)), name="factq-test"
    ) as broker:
        yield broker


@asynccontextmanager
async def api_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API app with its lifespan entered, over ASGI."""
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:
        transport = httpx.ASGITransport(app=_with_state(app, dict(state or {})))
        async with httpx.AsyncClient(transport=transport, base_url="http://factq.test") as client:
            yield client


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(settings) as client:
        yield client


def _with_state(app: Any, state: dict[str, Any]) -> Any:
    """Pass the lifespan state into each request, as a server does."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["state"] = dict(state)
        await app(scope, receive, send)

    return asgi


@asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[Worker]:
    """A worker consuming the namespace in this event loop, stopped (drained) on exit."""
    async with Worker(settings) as worker:
        task = asyncio.create_task(worker.run())
        try:
            yield worker
        finally:
            worker.stop()
            await asyncio.wait_for(task, 30)


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API over ASGI, with a worker behind it."""
    async with api_client(settings) as client, running_worker(settings):
        yield client


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[Worker]:
    async with running_worker(settings) as worker:
        yield worker


@asynccontextmanager
async def factq_server(settings: Settings) -> AsyncIterator[tuple[Server, str]]:
    """The API served in this event loop as `factq api` serves it (its server,
    protocol limits, WebSocket pings and size limit), and its host:port."""
    port = free_port()
    app = create_app(settings)
    config = server_config(app, settings, "127.0.0.1", port, log_level="warning")
    server = Server(config, app.state.stopping)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(15):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        yield server, f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@asynccontextmanager
async def live_server(settings: Settings) -> AsyncIterator[str]:
    """host:port of the API served for real in this event loop, for WebSockets and streams."""
    async with factq_server(settings) as (_, address):
        yield address


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[str]:
    """host:port of the API served for real, with a worker behind it."""
    async with live_server(settings) as address, running_worker(settings):
        yield address


@pytest.fixture
def execution_log(tmp_path: Path) -> str:
    return str(tmp_path / "executions.log")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures tests recorded (see tests/support/summary.py), after the results."""
    reports = [report for reports in terminalreporter.stats.values() for report in reports]
    for nodeid, text in figures_of(reports):
        terminalreporter.write_sep("-", f"figures: {nodeid}")
        terminalreporter.write_line(text)
