"""`factq --help` and the job commands start without the server stack: what each one imports.

The modules a command imports are read from `python -X importtime` as the
command really runs; a list of names, unlike a time, does not depend on how
busy the machine is.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from factq import cli
from factq.cli import jobs as cli_jobs
from tests.support.service import free_port

pytestmark = pytest.mark.timeout(60)

SERVER_MODULES = (
    "factq.api",
    "factq.worker",
    "factq.broker",
    "factq.state",
    "factq.submit",
    "factq.webhooks",
    "factq.tasks",
    "factq.cli.serve",
    "factq.settings",
    "pydantic_settings",
    "limits",
    "fastapi",
    "starlette",
    "uvicorn",
    "aio_pika",
    "aiormq",
    "redis",
    "gmpy2",
)
JOB_ID = "0" * 32
# `import time:       123 |        456 |     package.module`
_IMPORT_LINE = re.compile(r"import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$")


def run_importing(*args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `python -X importtime ARGS`; its result, and the name of every module it imported."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("FACTQ_")}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    modules = {match[1] for line in done.stderr.splitlines() if (match := _IMPORT_LINE.match(line))}
    return done, modules


def imported_by(*args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `factq ARGS` as a user does; its result, and every module it imported."""
    done, modules = run_importing("-m", "factq", *args)
    assert "factq.cli" in modules, done.stderr[-2000:]
    return done, modules


def server_modules_in(modules: set[str]) -> list[str]:
    return sorted(
        module
        for module in modules
        if any(module == name or module.startswith(name + ".") for name in SERVER_MODULES)
    )


def test_help_imports_no_more_than_the_parser() -> None:
    done, modules = imported_by("--help")
    assert done.returncode == 0
    assert "submit" in done.stdout and "worker" in done.stdout
    assert sorted(module for module in modules if module.startswith("factq")) == [
        "factq",
        "factq.cli",
    ]
    assert not {"httpx", "pydantic", "asyncio"} & modules


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--help"],
        ["status", JOB_ID],
        ["status", JOB_ID, "--json"],
        ["watch", JOB_ID],
        ["submit", "5"],
        ["cancel", JOB_ID],
    ],
    ids=" ".join,
)
def test_job_commands_import_no_server_module(args: list[str]) -> None:
    if "--help" not in args:
        # Nothing listens there: the command gets as far as its first request.
        args = [*args, "--url", f"http://127.0.0.1:{free_port()}"]
    done, modules = imported_by(*args)
    if "--help" in args:
        assert done.returncode == 0
    else:
        assert done.returncode == cli_jobs.EXIT_UNAVAILABLE, done.stderr[-2000:]
        assert "factq.cli.jobs" in modules and "httpx" in modules
    assert server_modules_in(modules) == []


def test_the_server_commands_do_load_the_stack() -> None:
    """The check above can fail: these names are what a server command imports."""
    done, modules = run_importing("-c", "import factq.cli.serve, factq.api, factq.worker.runner")
    assert done.returncode == 0, done.stderr[-2000:]
    assert {"uvicorn", "fastapi", "aio_pika", "redis", "factq.state.store"} <= set(
        server_modules_in(modules)
    )


WEB_STACK = {"fastapi", "starlette", "uvicorn", "httptools", "websockets"}


def test_a_worker_loads_no_web_stack() -> None:
    """`factq worker` runs without FastAPI or uvicorn in memory."""
    done, modules = run_importing("-c", "import factq.cli.work, factq.worker.runner")
    assert done.returncode == 0, done.stderr[-2000:]
    assert {"aio_pika", "factq.worker.pool", "factq.worker.runner"} <= modules
    assert sorted(m for m in modules if m.split(".")[0] in WEB_STACK) == []
    # Nor the HTTP client: only a worker that sends webhooks loads it, when it starts to.
    assert sorted(m for m in modules if m.split(".")[0] == "httpx") == []


def test_a_pool_process_loads_no_consumer() -> None:
    """A pool process imports the pool module and the task modules (in the worker's
    forkserver, before it forks): no AMQP, HTTP, web or rate-limit modules among them."""
    done, modules = run_importing("-c", "import factq.worker.pool, factq.tasks.factorial")
    assert done.returncode == 0, done.stderr[-2000:]
    assert {"factq.worker.pool", "gmpy2", "redis"} <= modules
    unneeded = {"aio_pika", "aiormq", "httpx", "standardwebhooks", "limits", *WEB_STACK}
    assert sorted(m for m in modules if m.split(".")[0] in unneeded) == []


def test_every_job_command_has_a_handler() -> None:
    assert set(cli_jobs.HANDLERS) == cli.JOB_COMMANDS


def test_the_client_imports_only_the_contract() -> None:
    """`factq.client` ships alone: the contract's models and httpx, no server part."""
    done, modules = run_importing("-c", "import factq.client")
    assert done.returncode == 0, done.stderr[-2000:]
    assert {"factq.client", "factq.schema", "httpx", "pydantic"} <= modules
    server = {"redis", "aio_pika", "gmpy2", "fastapi", "standardwebhooks"}
    assert sorted(m for m in modules if m.split(".")[0] in server) == []
    assert (
        sorted(
            m
            for m in modules
            if m.startswith("factq.") and not m.startswith(("factq.client", "factq.schema"))
        )
        == []
    )
