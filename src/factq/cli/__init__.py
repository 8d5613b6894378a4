"""`factq api | worker | dev | submit | status | watch | cancel`: parse flags, run one thing.

The API and `dev` run in `factq.cli.serve`, the worker in `factq.cli.work`,
the job commands in `factq.cli.jobs`; each is imported only when one of its
commands runs, so that `--help` and the job commands start without loading
the server stack, and a worker without the web stack.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, Final

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8000

JOB_COMMANDS: Final = frozenset({"submit", "status", "watch", "cancel"})

JOB_EPILOG: Final = """\
environment:
  FACTQ_URL       the service's base URL (default http://127.0.0.1:8000); --url overrides it
  FACTQ_API_KEY   the API key, sent as a bearer token; --api-key overrides it

exit codes:
  0  success: the job succeeded, or the action was done
  1  the job failed or was cancelled
  2  usage error: bad arguments, or an input the service refuses
  3  no such job
  4  the service is unavailable, or cannot be reached
  5  any other error from the API
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="factq",
        description="Slow computations behind a queue. Settings come from FACTQ_* "
        "environment variables (see the README); flags override them.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    api = commands.add_parser("api", help="serve the HTTP API", description="Serve the HTTP API.")
    _add_server_flags(api)

    worker = commands.add_parser(
        "worker", help="run jobs from the queue", description="Consume jobs and run them."
    )
    _add_worker_flags(worker)

    dev = commands.add_parser(
        "dev",
        help="API and one worker together, for a local machine",
        description="Run the API and one worker as two processes; Ctrl-C stops both.",
    )
    _add_server_flags(dev)
    _add_worker_flags(dev)
    _add_job_commands(commands)
    return parser


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST}")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="API processes sharing the port (default FACTQ_API_WORKERS, else 1)",
    )


def _add_worker_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="pool processes, i.e. jobs run at once (default FACTQ_CONCURRENCY, else the cores)",
    )
    parser.add_argument(
        "--tasks",
        metavar="T,...",
        default=None,
        help="serve only these tasks, comma-separated (default FACTQ_WORKER_TASKS, else all)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="P",
        default=None,
        help="serve the worker's Prometheus metrics at :P/metrics "
        "(default FACTQ_METRICS_PORT, else none)",
    )


def _add_job_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The job commands, clients of a running service (run by `factq.cli.jobs`)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", help="the service's base URL (default: FACTQ_URL, else http://127.0.0.1:8000)"
    )
    common.add_argument("--api-key", help="the API key (default: FACTQ_API_KEY)")

    def add(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            parents=[common],
            help=summary,
            description=description,
            epilog=JOB_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    submit = add(
        "submit",
        "submit a job",
        "Submit a job and print its id: factorial(N) with `factq submit N`, any task with\n"
        "--task NAME --input JSON. With --wait, follow the job with a progress bar on\n"
        "stderr, then print its value in the task's default format (a factorial's decimal\n"
        "digits, an embedding's JSON), or write it to --output.\n"
        "\n"
        "examples:\n"
        "  factq submit 100000 --wait\n"
        '  factq submit --task embed --input \'{"texts": ["a", "b"]}\' --wait',
    )
    submit.add_argument(
        "n",
        type=int,
        nargs="?",
        metavar="N",
        help="compute N! (the factorial's input; for another task use --input)",
    )
    submit.add_argument(
        "--task", metavar="NAME", help="the task to run (default factorial; see GET /v1/tasks)"
    )
    submit.add_argument(
        "--input",
        metavar="JSON",
        dest="input_json",
        help='the task\'s input as a JSON object, e.g. \'{"n": 20}\' or \'{"texts": ["a"]}\'',
    )
    submit.add_argument("--wait", action="store_true", help="wait for the job and get its value")
    submit.add_argument(
        "-o", "--output", metavar="FILE", help="write the value to FILE, streamed (implies --wait)"
    )
    submit.add_argument(
        "--hex",
        action="store_true",
        help="the factorial in hexadecimal digits (factorial only; implies --wait)",
    )

    status = add("status", "show a job", "Show a job's state, or its JSON with --json.")
    status.add_argument("job_id", metavar="ID")
    status.add_argument("--json", action="store_true", help="the job's JSON, as the API gives it")

    watch = add(
        "watch",
        "print a job's events until it ends",
        "Print each event of a job as it comes, until the job ends.",
    )
    watch.add_argument("job_id", metavar="ID")
    watch.add_argument("--json", action="store_true", help="each event's JSON, one per line")

    cancel = add("cancel", "cancel a job", "Cancel a queued or running job.")
    cancel.add_argument("job_id", metavar="ID")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in JOB_COMMANDS:
        from factq.cli import jobs as cli_jobs

        return cli_jobs.run(args)
    return _run_server(args)


def _run_server(args: argparse.Namespace) -> int:
    """`api`, `worker` or `dev`: build the settings, configure logging, run until stopped."""
    import logging

    from pydantic import ValidationError

    from factq.errors import FactqError
    from factq.logs import configure_logging
    from factq.settings import Settings

    overrides: dict[str, Any] = {}
    if getattr(args, "concurrency", None) is not None:
        overrides["concurrency"] = args.concurrency
    if getattr(args, "tasks", None) is not None:
        overrides["worker_tasks"] = args.tasks
    if getattr(args, "workers", None) is not None:
        overrides["api_workers"] = args.workers
    if getattr(args, "metrics_port", None) is not None:
        overrides["metrics_port"] = args.metrics_port
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        _refuse_settings(exc)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "dev":
        from factq.cli import serve

        return serve.run_dev(args.host, args.port, settings)
    try:
        if args.command == "api":
            from factq.cli import serve

            return serve.run_api(settings, args.host, args.port)
        from factq.cli import work

        return work.run_worker(settings)
    except FactqError as exc:
        logging.getLogger("factq").error("cannot start: %s", exc.message)
        return 1
    except KeyboardInterrupt:
        return 130


def _refuse_settings(exc: Exception) -> None:
    """Say why the settings are invalid: in a JSON line when FACTQ_LOG_FORMAT asks
    for them (read as it is given, since the settings are what failed)."""
    import os

    if os.environ.get("FACTQ_LOG_FORMAT") != "json":
        print(f"factq: invalid settings:\n{exc}", file=sys.stderr)
        return
    import logging

    from factq.logs import configure_logging

    configure_logging("error", "json")
    logging.getLogger("factq").error("invalid settings: %s", exc)


if __name__ == "__main__":
    sys.exit(main())
