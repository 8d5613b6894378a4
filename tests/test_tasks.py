"""The task registry and the factorial task, as pure functions."""

from __future__ import annotations

from typing import Any

import gmpy2
import pytest
from pydantic import BaseModel

from factq import json_numbers
from factq.errors import FactqError, InvalidInput, UnknownTask
from factq.settings import Settings
from factq.tasks import ResultFormat, Task, TaskOutput, TaskRegistry
from factq.tasks.factorial import factorial


@pytest.fixture
def registry() -> TaskRegistry:
    return TaskRegistry.from_settings(Settings(namespace="unit"))


@pytest.mark.parametrize("n", [0, 1, 2, 10, 25, 1000, 150_000])
def test_factorial_is_exact_in_both_formats(n: int) -> None:
    output = factorial(n)
    expected = gmpy2.fac(n)
    assert output.formats["decimal"] == expected.digits(10).encode()
    assert gmpy2.mpz(output.formats["hex"].decode(), 16) == expected
    digits = expected.digits(10)
    assert output.summary == {"digits": len(digits), "head": digits[:32], "tail": digits[-32:]}


def test_factorial_150000_has_711273_digits() -> None:
    assert factorial(150_000).summary["digits"] == 711_273


@pytest.mark.parametrize("n", [0, 1, 25, 1000, 150_000])
def test_factorial_from_its_uploaded_digits_is_its_output(registry: TaskRegistry, n: int) -> None:
    output = factorial(n)
    from_upload = registry.get_task("factorial").from_upload
    assert from_upload is not None
    assert from_upload(output.formats["decimal"]) == output


@pytest.mark.parametrize(
    "raw",
    [
        {"n": -1},
        {"n": 1.5},
        {"n": 1.0},
        {"n": "abc"},
        {"n": "150000"},
        {"n": True},
        {"n": 10**9},
        {"n": None},
        {},
        {"n": 5, "extra": 1},
        [5],
        "n=5",
    ],
)
def test_factorial_rejects_bad_input(registry: TaskRegistry, raw: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        registry.get_task("factorial").validate_input(raw)
    assert caught.value.details
    assert all(detail["loc"].startswith("input") for detail in caught.value.details)


@pytest.mark.parametrize("n", [0, 150_000, 1_000_000])
def test_factorial_accepts_integers_within_the_limit(registry: TaskRegistry, n: int) -> None:
    assert registry.get_task("factorial").validate_input({"n": n}) == {"n": n}


def test_max_n_is_a_setting() -> None:
    registry = TaskRegistry.from_settings(Settings(namespace="unit", max_n=100))
    task = registry.get_task("factorial")
    assert task.validate_input({"n": 100}) == {"n": 100}
    with pytest.raises(InvalidInput, match="less than or equal to 100"):
        task.validate_input({"n": 101})
    assert task.input_model.model_json_schema()["properties"]["n"]["maximum"] == 100
    assert task.limits == {"max_n": 100}


def test_unknown_task_names_the_known_ones(registry: TaskRegistry) -> None:
    with pytest.raises(UnknownTask, match="factorial"):
        registry.get_task("fibonacci")


def test_task_modules_add_tasks() -> None:
    registry = TaskRegistry.from_settings(
        Settings(namespace="unit", task_modules=" tests.support.tasks , ")
    )
    # The built-in task, the installed plugins' (embed, and the example
    # plugin's shout), then the module's.
    assert list(registry) == [
        "factorial",
        "embed",
        "shout",
        "record",
        "memo",
        "memo_fail",
        "crash",
        "steps",
        "fail",
        "tally",
        "broken_model",
    ]


@pytest.mark.parametrize("module", ["no.such.module", "factq.state.keys"])
def test_a_bad_task_module_is_a_clear_error(module: str) -> None:
    with pytest.raises(FactqError, match=module):
        TaskRegistry.from_settings(Settings(namespace="unit", task_modules=module))


def test_result_formats(registry: TaskRegistry) -> None:
    task = registry.get_task("factorial")
    assert task.default_format.name == "decimal"
    assert task.result_format(None) == task.default_format
    assert task.result_format("hex") is not None
    assert task.result_format("octal") is None


class Unbounded(BaseModel):
    x: int


def _identity(x: int) -> TaskOutput:
    return TaskOutput(summary={"x": x}, formats={"decimal": str(x).encode()})


def _task_of(model: type[BaseModel]) -> Task:
    return Task(
        name="identity",
        description="x",
        function=_identity,
        input_model=model,
        formats=(ResultFormat("decimal"),),
    )


def test_an_integer_too_long_to_read_is_refused_even_without_a_bound() -> None:
    task = _task_of(Unbounded)
    with pytest.raises(InvalidInput) as refused:
        task.validate_input(json_numbers.loads('{"x": ' + "7" * 5000 + "}"))
    assert refused.value.details == [
        {
            "loc": "input.x",
            "message": "an integer of 5,000 digits is more than the 4,300 digits read",
        }
    ]


class Anything(BaseModel):
    x: Any


def test_an_integer_too_long_to_read_is_refused_in_a_field_of_any_type() -> None:
    task = _task_of(Anything)
    with pytest.raises(InvalidInput, match="5,000 digits"):
        task.validate_input(json_numbers.loads('{"x": [1, {"y": ' + "7" * 5000 + "}]}"))
    assert task.validate_input({"x": [1, {"y": 7}]}) == {"x": [1, {"y": 7}]}
