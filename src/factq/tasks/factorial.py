"""The demonstration task: n! of a large n, exact, with gmpy2."""

from __future__ import annotations

import gmpy2
from pydantic import BaseModel, ConfigDict, Field, create_model

from factq.settings import Settings
from factq.tasks import ResultFormat, Task, TaskOutput

PREVIEW_DIGITS = 32


def factorial(n: int) -> TaskOutput:
    """n! as decimal and hexadecimal digits, with a summary for polling clients."""
    value = gmpy2.fac(n)
    # GMP converts in subquadratic time; str(int) would be quadratic and is
    # capped at 4,300 digits on current Python.
    decimal: bytes = value.digits(10).encode("ascii")
    hexadecimal: bytes = value.digits(16).encode("ascii")
    return TaskOutput(
        summary={
            "digits": len(decimal),
            "head": decimal[:PREVIEW_DIGITS].decode("ascii"),
            "tail": decimal[-PREVIEW_DIGITS:].decode("ascii"),
        },
        formats={"decimal": decimal, "hex": hexadecimal},
    )


def factorial_input(max_n: int) -> type[BaseModel]:
    """The input model, with the deployment's limit on n."""
    return create_model(
        "FactorialInput",
        __config__=ConfigDict(extra="forbid"),
        n=(int, Field(ge=0, le=max_n, description=f"A JSON integer from 0 to {max_n}.")),
    )


def factq_tasks(settings: Settings) -> list[Task]:
    return [
        Task(
            name="factorial",
            description="n! exactly, as decimal (or hexadecimal) digits.",
            function=factorial,
            input_model=factorial_input(settings.max_n),
            formats=(ResultFormat("decimal"), ResultFormat("hex")),
            limits={"max_n": settings.max_n},
        )
    ]
