"""The task registry: what factq can run, with each task's input model and limits.

A task is a name, a pydantic model of its input, and a top-level function that
the worker runs in its process pool (so it must be picklable and must do no
I/O). It may declare what it needs of a worker: a `load()` run once in each
pool process (a model's weights), whose value the function gets as `model`;
the memory a pool process needs for it; and `batch`, to be called with several
jobs' inputs at once. It may also say how to take a result computed elsewhere
(`from_upload`, run in a process of the API's).

A module adds tasks by defining `factq_tasks(settings)`, which returns them.
factq finds such modules in two ways: installed packages name them under the
`factq.tasks` entry-point group (`[project.entry-points."factq.tasks"]` in a
pyproject.toml), and `FACTQ_TASK_MODULES` lists more. The built-in
`factq.tasks.factorial` is always loaded.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from factq.errors import (
    FactqError,
    InvalidInput,
    UnknownTask,
    first_problem,
    validation_details,
)
from factq.json_numbers import LongInteger
from factq.settings import Settings

BUILTIN_MODULES = ("factq.tasks.factorial",)
ENTRY_POINT_GROUP = "factq.tasks"


@dataclass(frozen=True, slots=True)
class TaskOutput:
    """What a task returns: a small JSON summary, and the full value in each format."""

    summary: dict[str, Any]
    formats: dict[str, bytes]


@dataclass(frozen=True, slots=True)
class ResultFormat:
    """One way the full result can be downloaded (`?format=name`)."""

    name: str
    media_type: str = "text/plain; charset=utf-8"
    # The download's file name ends with it.
    extension: str = "txt"


class BatchLimits(NamedTuple):
    max_batch_size: int
    max_batch_delay_ms: float


@dataclass(frozen=True, slots=True)
class Batching:
    """A task whose function takes several jobs' inputs in one call.

    The function is then `function(inputs, **extras)`: a list of inputs in, a
    list of outputs out, in the same order; an item may be an exception
    instead, which fails only its job. If the call raises, each input is run
    again alone, so that only the job whose input fails, fails. The worker
    gathers up to `max_batch_size` items, or what came within
    `max_batch_delay_ms` of the first, whichever is first
    (`FACTQ_TASK_BATCHING` overrides both per task).
    """

    max_batch_size: int = 32
    max_batch_delay_ms: float = 5.0
    # How many items one job's input counts for (its texts, say); 1 by default.
    size: Callable[[dict[str, Any]], int] | None = None

    def size_of(self, value: dict[str, Any]) -> int:
        return 1 if self.size is None else max(1, self.size(value))


@dataclass(frozen=True, slots=True)
class Task:
    """A computation factq can run."""

    name: str
    description: str
    # (inputs) -> list of outputs for a batched task; (**input) -> output otherwise.
    function: Callable[..., Any]
    input_model: type[BaseModel]
    formats: tuple[ResultFormat, ...]
    limits: dict[str, Any] = field(default_factory=dict)
    # The same input always gives the same output: an identical job running at
    # the same time shares one computation, and a later one reuses the result
    # (for FACTQ_RESULT_CACHE_TTL_S). Leave it False for anything that samples.
    deterministic: bool = False
    # Change it when the output for an input changes (a new model, a fix), so
    # that outcomes stored by the previous code are not reused.
    version: str = ""
    # For a result computed elsewhere (the original design's workers upload
    # theirs): the output from the whole value in the default format, its
    # summary and every format as `function` would give them. It runs in a
    # process of the API's, so, like `function`, it is top-level and does no I/O.
    from_upload: Callable[[bytes], TaskOutput] | None = None
    # The model of the summary in the job's `result` (listed by GET /v1/tasks).
    output_model: type[BaseModel] | None = None
    # Run once in each pool process before it takes a job of this task (and
    # again in a process that replaces one); the function gets its value as
    # `model`. A worker whose load fails serves none of the task's jobs.
    load: Callable[[], Any] | None = None
    # Memory one pool process needs for this task (its model), in MiB: a worker
    # without that much available for each process does not serve the task.
    memory_mib: int = 0
    # Set: the function takes a list of inputs (see `Batching`).
    batch: Batching | None = None
    # Modules `load` imports that a worker serving the task imports once, in the
    # process its pool processes are forked from: each then starts with them
    # (a replacement after a cancel loads in a second, not in several), and
    # their pages are shared. Only modules safe to fork after import.
    preload: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.formats:
            raise ValueError(f"task {self.name!r} declares no result format")

    def batch_limits(self, settings: Settings) -> BatchLimits | None:
        """How a worker batches this task, its own defaults under the
        deployment's `FACTQ_TASK_BATCHING`; None for a task that takes one input."""
        if self.batch is None:
            return None
        chosen = settings.task_batching.get(self.name)
        size = None if chosen is None else chosen.max_batch_size
        delay = None if chosen is None else chosen.max_batch_delay_ms
        return BatchLimits(
            max_batch_size=self.batch.max_batch_size if size is None else size,
            max_batch_delay_ms=self.batch.max_batch_delay_ms if delay is None else delay,
        )

    @property
    def default_format(self) -> ResultFormat:
        return self.formats[0]

    def result_format(self, name: str | None) -> ResultFormat | None:
        """The named format, the default one for None, or None when unknown."""
        if name is None:
            return self.default_format
        return next((fmt for fmt in self.formats if fmt.name == name), None)

    def validate_input(self, raw: Any) -> dict[str, Any]:
        """The input as the task will get it, or `InvalidInput` naming each problem."""
        try:
            model = self.input_model.model_validate(raw, strict=True)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            messages = _messages(self.input_model, errors)
            first = first_problem(validation_details(errors, messages=messages))
            raise InvalidInput(
                f"invalid input for task {self.name!r}: {first}",
                details=validation_details(errors, within=["input"], messages=messages),
            ) from None
        long = _long_integer(raw)
        if long is not None:
            # Taken by a field of any type: still no value this service can read.
            raise InvalidInput(
                f"invalid input for task {self.name!r}: {long.describe()} is more than "
                f"the {sys.get_int_max_str_digits():,} digits read"
            )
        return model.model_dump(mode="json")


class TaskRegistry(Mapping[str, Task]):
    """The tasks of one deployment, by name."""

    def __init__(self, tasks: Iterable[Task], modules: Sequence[str] = ()) -> None:
        # The modules the tasks came from, for pool processes to import up front.
        self.modules = tuple(modules)
        self._tasks: dict[str, Task] = {}
        for task in tasks:
            if task.name in self._tasks:
                raise ValueError(f"task {task.name!r} is registered twice")
            self._tasks[task.name] = task

    @classmethod
    def from_settings(cls, settings: Settings) -> TaskRegistry:
        """The built-in tasks, those of installed plugins (the `factq.tasks`
        entry points) and those of every module in `FACTQ_TASK_MODULES`."""
        tasks: list[Task] = []
        module_names = list(
            dict.fromkeys((*BUILTIN_MODULES, *plugin_modules(), *settings.task_module_names))
        )
        for module_name in module_names:
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise FactqError(f"cannot import task module {module_name!r}: {exc}") from exc
            provider = getattr(module, "factq_tasks", None)
            if provider is None:
                raise FactqError(f"task module {module_name!r} defines no factq_tasks(settings)")
            tasks.extend(provider(settings))
        return cls(tasks, module_names)

    def served(self, names: Sequence[str]) -> list[Task]:
        """The tasks a worker told to serve `names` serves (all, for none)."""
        if not names:
            return list(self._tasks.values())
        unknown = [name for name in names if name not in self._tasks]
        if unknown:
            known = ", ".join(sorted(self._tasks))
            raise UnknownTask(
                f"unknown task {unknown[0]!r} in the worker's tasks; this deployment runs: {known}"
            )
        return [self._tasks[name] for name in dict.fromkeys(names)]

    def get_task(self, name: str) -> Task:
        try:
            return self._tasks[name]
        except KeyError:
            known = ", ".join(sorted(self._tasks))
            raise UnknownTask(f"unknown task {name!r}; this deployment runs: {known}") from None

    def __getitem__(self, name: str) -> Task:
        return self._tasks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)


def plugin_modules() -> list[str]:
    """The task modules installed packages name under the `factq.tasks` entry points."""
    return [
        entry_point.module
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    ]


def _long_integer(value: Any) -> LongInteger | None:
    """The first integer too long to read anywhere in a JSON value, if any."""
    if isinstance(value, LongInteger):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for item in items:
        found = _long_integer(item)
        if found is not None:
            return found
    return None


def _messages(model: type[BaseModel], errors: Sequence[ErrorDetails]) -> list[str]:
    """Pydantic's message for each error; for an integer too long to read, one
    that says so and names the field's limit."""
    properties = model.model_json_schema().get("properties", {})
    messages = []
    for error in errors:
        value = error.get("input")
        if not isinstance(value, LongInteger):
            messages.append(str(error["msg"]))
            continue
        schema = properties.get(error["loc"][0], {}) if len(error["loc"]) == 1 else {}
        bound = "minimum" if value.negative else "maximum"
        if bound in schema:
            relation = "at least" if value.negative else "at most"
            messages.append(f"{value.describe()} is out of range: {relation} {schema[bound]}")
        else:
            limit = sys.get_int_max_str_digits()
            messages.append(f"{value.describe()} is more than the {limit:,} digits read")
    return messages
