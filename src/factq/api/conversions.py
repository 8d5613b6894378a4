"""Tasks' result conversions: a result computed elsewhere, uploaded in its
task's default format, made into the task's output by the task's own
`from_upload` (see `factq.tasks.Task`).

That is big-number work (the factorial task reads millions of decimal digits
and writes them in hexadecimal), and gmpy2 holds the GIL while it works: in a
thread it would stall the event loop as surely as on it, so it runs in a
process. One process, made on the first conversion and kept until the API
stops:

- made on first use, so an API whose callers never upload a result starts
  none (even an executor made up front but not yet used starts
  multiprocessing's resource tracker process at once);
- kept, so a conversion costs a call, not a process start: a fresh forkserver
  process and its imports took 0.3 to 0.5 s here, a call to a live one under
  a millisecond;
- one, since uploads are rare: those that arrive together wait their turn
  rather than take the API's CPUs from its requests.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from redis.exceptions import RedisError

from factq.errors import BackendUnavailable, InvalidInput
from factq.settings import Settings
from factq.state.connection import connect_blocking
from factq.state.results import UPLOAD_TTL_S
from factq.tasks import Task, TaskOutput


def format_uploads(task: Task, upload: str) -> dict[str, str]:
    """Where each of the task's formats of an upload is kept until the job takes
    them: the default format is the upload itself; none without an upload."""
    if not upload:
        return {}
    return {
        fmt.name: upload if fmt == task.default_format else f"{upload}:{fmt.name}"
        for fmt in task.formats
    }


class Conversions:
    """The API's process for tasks' result conversions, made on first use."""

    def __init__(self, settings: Settings) -> None:
        self._redis_url = settings.redis_url.get_secret_value()
        self._redis_cluster = settings.redis_cluster
        self._executor: ProcessPoolExecutor | None = None

    async def from_upload(self, task: Task, uploads: Mapping[str, str]) -> dict[str, Any]:
        """The task's summary of the value uploaded in its default format; its
        other formats are written where `uploads` (see `format_uploads`) says."""
        if task.from_upload is None:
            raise InvalidInput(f"task {task.name!r} takes no result computed elsewhere")
        upload = uploads[task.default_format.name]
        others = {name: key for name, key in uploads.items() if key != upload}
        if self._executor is None:
            context = multiprocessing.get_context("forkserver")
            self._executor = ProcessPoolExecutor(1, mp_context=context)
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor,
                _convert_upload,
                task.from_upload,
                self._redis_url,
                self._redis_cluster,
                upload,
                others,
                UPLOAD_TTL_S,
            )
        except (RedisError, OSError) as exc:
            raise BackendUnavailable("Redis is unavailable") from exc

    def close(self) -> None:
        """Stop the process, once a conversion under way has finished."""
        if self._executor is not None:
            self._executor.shutdown()


def _convert_upload(
    from_upload: Callable[[bytes], TaskOutput],
    redis_url: str,
    redis_cluster: bool,
    upload: str,
    others: Mapping[str, str],
    ttl_s: int,
) -> dict[str, Any]:
    """In the conversion process: the output of the uploaded value, its other
    formats written to their keys; the summary goes back."""
    client = connect_blocking(redis_url, cluster=redis_cluster)
    try:
        value = client.get(upload)
        # The client answers bytes (it decodes nothing), or None for no key.
        if not isinstance(value, bytes):
            raise InvalidInput("the upload expired before it was converted")
        output = from_upload(value)
        for name, key in others.items():
            client.set(key, output.formats[name], ex=ttl_s)
    finally:
        client.close()
    return output.summary
