"""`factq submit | status | watch | cancel`: the job commands, as clients of a running service.

`factq.cli` parses their flags (and documents the exit codes below in their help).
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, BinaryIO, Final

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from factq.client import (
    AlreadyFinished,
    Client,
    ConnectionFailed,
    FactqClientError,
    InvalidInput,
    InvalidRequest,
    Job,
    JobEvent,
    JobStatus,
    NotFound,
    Unavailable,
    UnknownTask,
)

EXIT_OK: Final = 0
EXIT_JOB_UNSUCCESSFUL: Final = 1
EXIT_USAGE: Final = 2
EXIT_NOT_FOUND: Final = 3
EXIT_UNAVAILABLE: Final = 4
EXIT_API_ERROR: Final = 5
EXIT_INTERRUPTED: Final = 130

FACTORIAL: Final = "factorial"
# A progress bar's description shows this much of a job's input, at most.
DESCRIBE_INPUT_CHARS: Final = 40

Handler = Callable[[Client, argparse.Namespace, Console], int]


def run(args: argparse.Namespace) -> int:
    """Run one job command; the exit code says how it went (see `factq.cli.JOB_EPILOG`)."""
    console = Console(stderr=True, highlight=False)
    if getattr(args, "job_id", None) == "":
        return _fail("a job id must not be empty", EXIT_USAGE)
    try:
        client = Client(args.url, args.api_key)
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    handler = HANDLERS[args.command]
    try:
        with client:
            return handler(client, args, console)
    except FactqClientError as exc:
        return _fail(exc.message, exit_code_for(exc))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader stopped early (`| head`), which is its choice, not our failure;
        # stdout goes to /dev/null so that the exit's flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def exit_code_for(exc: FactqClientError) -> int:
    """The exit code of a client error."""
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, ConnectionFailed | Unavailable):
        return EXIT_UNAVAILABLE
    if isinstance(exc, InvalidInput | UnknownTask | InvalidRequest):
        return EXIT_USAGE
    return EXIT_API_ERROR


def _fail(message: str, code: int) -> int:
    print(f"factq: {message}", file=sys.stderr)
    return code


class UsageError(Exception):
    """Arguments that parse but do not go together, found before anything is sent."""


def _submit(client: Client, args: argparse.Namespace, console: Console) -> int:
    try:
        task, job_input = _job_request(args)
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    job = client.submit(task, job_input)
    if not (args.wait or args.output or args.hex):
        print(job.id)
        return EXIT_OK
    print(f"job {job.id}", file=sys.stderr)
    try:
        job = _wait_with_progress(client, job, console)
    except KeyboardInterrupt:
        print(f"factq: stopped waiting; the job goes on (factq cancel {job.id})", file=sys.stderr)
        raise
    print(_outcome(job), file=sys.stderr)
    if job.status is not JobStatus.SUCCEEDED:
        return EXIT_JOB_UNSUCCESSFUL
    if task == FACTORIAL:
        _write_factorial(client, job, args)
    else:
        _write_value(client, job, args)
    return EXIT_OK


def _job_request(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The task and input that the arguments name, or `UsageError` saying what is wrong."""
    if args.task is not None and not args.task.strip():
        raise UsageError("--task must name a task")
    task: str = args.task or FACTORIAL
    if args.n is not None and task != FACTORIAL:
        raise UsageError(f"N is the factorial's input; give task {task!r} its input with --input")
    if args.hex and task != FACTORIAL:
        raise UsageError(f"--hex is for the factorial only, not task {task!r}")
    if args.n is not None and args.input_json is not None:
        raise UsageError("give N or --input, not both")
    if args.input_json is not None:
        return task, _parse_input(args.input_json)
    if args.n is None:
        raise UsageError("give N (the factorial of N) or --input JSON (any task's input)")
    return task, {"n": args.n}


def _parse_input(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--input is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError("--input must be a JSON object, like '{\"n\": 20}'")
    return value


def _write_factorial(client: Client, job: Job, args: argparse.Namespace) -> None:
    """Its digits to --output, or to stdout with a newline."""
    result_format = "hex" if args.hex else None
    if args.output:
        written = client.result(job.id, to=args.output, format=result_format)
        kind = "hexadecimal" if args.hex else "decimal"
        print(f"wrote {written:,} {kind} digits to {args.output}", file=sys.stderr)
    else:
        client.result(job.id, to=sys.stdout.buffer, format=result_format)
        sys.stdout.buffer.write(b"\n")
        sys.stdout.buffer.flush()


def _write_value(client: Client, job: Job, args: argparse.Namespace) -> None:
    """Another task's value in its default format, as the service sends it, to --output
    or stdout; on stdout, text that does not end a line gets a newline, as digits do."""
    if args.output:
        written = client.result(job.id, to=args.output)
        print(f"wrote {written:,} bytes to {args.output}", file=sys.stderr)
        return
    out = _TextEnding(sys.stdout.buffer)
    client.result(job.id, to=out)
    if out.is_unended_text:
        sys.stdout.buffer.write(b"\n")
    sys.stdout.buffer.flush()


class _TextEnding:
    """Writes through, noting whether what went by is UTF-8 text without a final newline."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._is_text = True
        self._last = b""

    def write(self, data: bytes) -> int:
        if data:
            self._last = data[-1:]
        if self._is_text:
            try:
                self._is_text = "\x00" not in self._decoder.decode(data)
            except UnicodeDecodeError:
                self._is_text = False
        return self._out.write(data)

    @property
    def is_unended_text(self) -> bool:
        if not self._is_text or self._last in (b"", b"\n"):
            return False
        try:
            self._decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
        return True


def _wait_with_progress(client: Client, job: Job, console: Console) -> Job:
    """Wait for the job; on a terminal, a live bar of its status, progress and elapsed time."""
    if job.status.is_terminal:
        return job
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    ) as progress:
        bar = progress.add_task(_describe(job), total=1.0)
        progress.update(bar, completed=_share_done(job))

        def show(job: Job) -> None:
            progress.update(bar, description=_describe(job), completed=_share_done(job))

        return client.wait(job.id, on_update=show)


def _describe(job: Job) -> str:
    """The task, what it computes, and how far it is: `factorial 20! running`."""
    status = "cancel requested" if job.cancel_requested and not job.status.is_terminal else None
    return f"{job.task} {_input_text(job)} {status or job.status}"


def _input_text(job: Job) -> str:
    if job.task == FACTORIAL and isinstance(job.input.get("n"), int):
        return f"{job.input['n']}!"
    text = json.dumps(job.input, ensure_ascii=False)
    return text if len(text) <= DESCRIBE_INPUT_CHARS else text[: DESCRIBE_INPUT_CHARS - 1] + "…"


def _share_done(job: Job) -> float:
    return 1.0 if job.status is JobStatus.SUCCEEDED else job.progress or 0.0


def _outcome(job: Job) -> str:
    return f"job {job.id} {job.status}{_ending(job)}"


def _ending(job: Job) -> str:
    """How a finished job ended, to follow its status: its run time, or its error."""
    if job.status is JobStatus.SUCCEEDED:
        return f" in {_seconds(job.metrics.run_s)}"
    if job.status is JobStatus.FAILED and job.error is not None:
        return f": {job.error.type}: {job.error.message}"
    return ""


def _status(client: Client, args: argparse.Namespace, console: Console) -> int:
    job = client.get(args.job_id)
    if args.json:
        print(job.model_dump_json(indent=2))
    else:
        width = max(len(name) for name, _ in _summary(job))
        for name, value in _summary(job):
            print(f"{name:<{width}}  {value}")
    return EXIT_OK


def _summary(job: Job) -> list[tuple[str, str]]:
    """The job as readable (name, value) lines, leaving out what is not known yet."""
    lines = [
        ("id", job.id),
        ("task", f"{job.task} {json.dumps(job.input)}"),
        ("status", str(job.status) + (" (cancel requested)" if job.cancel_requested else "")),
        ("progress", f"{job.progress:.0%}" if job.progress is not None else ""),
        ("attempts", str(job.attempts)),
        ("created", _time(job.created_at)),
        ("started", _time(job.started_at)),
        ("finished", _time(job.finished_at)),
        ("queued for", _seconds(job.metrics.queue_s) if job.metrics.queue_s is not None else ""),
        ("ran for", _seconds(job.metrics.run_s) if job.metrics.run_s is not None else ""),
        ("result", _result_text(job.result)),
        ("error", f"{job.error.type}: {job.error.message}" if job.error else ""),
    ]
    return [(name, value) for name, value in lines if value]


def _result_text(result: dict[str, Any] | None) -> str:
    if result is None:
        return ""
    if {"digits", "head", "tail"} <= result.keys():
        digits = int(result["digits"])
        if digits <= len(result["head"]):
            return f"{digits:,} digits: {result['head']}"
        return f"{digits:,} digits: {result['head']}…{result['tail']}"
    return json.dumps({key: value for key, value in result.items() if key != "url"})


def _time(moment: datetime | None) -> str:
    return "" if moment is None else moment.isoformat(sep=" ", timespec="milliseconds")


def _seconds(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.3f} s"


def _watch(client: Client, args: argparse.Namespace, console: Console) -> int:
    last: Job | None = None
    for event in client.events(args.job_id):
        print(event.model_dump_json() if args.json else _event_line(event), flush=True)
        last = event.job
    if last is None or last.status is not JobStatus.SUCCEEDED:
        return EXIT_JOB_UNSUCCESSFUL
    return EXIT_OK


def _event_line(event: JobEvent) -> str:
    job = event.job
    line = f"{datetime.now():%H:%M:%S} #{event.seq} {job.status}"
    if job.status.is_terminal:
        return line + _ending(job)
    if job.progress is not None:
        line += f" {job.progress:.0%}"
    if job.cancel_requested:
        line += " (cancel requested)"
    return line


def _cancel(client: Client, args: argparse.Namespace, console: Console) -> int:
    try:
        job = client.cancel(args.job_id)
    except AlreadyFinished as exc:
        return _fail(f"cannot cancel: {exc.message}", EXIT_API_ERROR)
    if job.status is JobStatus.CANCELLED:
        print(f"job {job.id} cancelled")
    else:
        print(f"job {job.id} is {job.status}: cancel requested, it stops within a second")
    return EXIT_OK


HANDLERS: Final[dict[str, Handler]] = {
    "submit": _submit,
    "status": _status,
    "watch": _watch,
    "cancel": _cancel,
}
