"""The demonstration task: n! of a large n, exact, with gmpy2."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gmpy2
from pydantic import BaseModel, ConfigDict, Field, create_model

from factq.settings import Settings
from factq.tasks import ResultFormat, Task, TaskOutput

PREVIEW_DIGITS = 32
# Below this n a job takes milliseconds: reporting progress would cost more
# than it tells.
PROGRESS_MIN_N = 50_000
# Rough shares of the time for large n: the product, then the conversion to
# decimal digits (one GMP call that cannot report), then to hexadecimal.
PRODUCT_SHARE = 0.2
CONVERTED_SHARE = 0.95


def factorial(n: int, report: Callable[[float], None] | None = None) -> TaskOutput:
    """n! as decimal and hexadecimal digits, with a summary for polling clients."""
    if report is None or n < PROGRESS_MIN_N:
        value = gmpy2.fac(n)
    else:
        value = _factorial_reporting(n, lambda done: report(PRODUCT_SHARE * done))
    # GMP converts in subquadratic time; str(int) would be quadratic and is
    # capped at 4,300 digits on current Python.
    decimal: bytes = value.digits(10).encode("ascii")
    if report is not None and n >= PROGRESS_MIN_N:
        report(CONVERTED_SHARE)
    hexadecimal: bytes = value.digits(16).encode("ascii")
    return _output(decimal, hexadecimal)


def factorial_from_upload(decimal: bytes) -> TaskOutput:
    """The output of a factorial computed elsewhere, from its decimal digits as
    sent: the summary `factorial` gives, and the hexadecimal digits."""
    hexadecimal: bytes = gmpy2.mpz(decimal).digits(16).encode("ascii")
    return _output(decimal, hexadecimal)


def _output(decimal: bytes, hexadecimal: bytes) -> TaskOutput:
    return TaskOutput(
        summary={
            "digits": len(decimal),
            "head": decimal[:PREVIEW_DIGITS].decode("ascii"),
            "tail": decimal[-PREVIEW_DIGITS:].decode("ascii"),
        },
        formats={"decimal": decimal, "hex": hexadecimal},
    )


def _factorial_reporting(n: int, report: Callable[[float], None], levels: int = 6) -> Any:
    """n! in a few steps, reporting the share done after each.

    n! = C(n, h) * h!^2 * (h + 1 if n is odd), h = n // 2: GMP's own factorial
    for n / 2**levels, then one step per doubling. Measured as fast as
    gmpy2.fac(n) within a few percent, since GMP's binomial is cheap.
    """
    sizes = [n >> level for level in range(levels)]
    value = gmpy2.fac(n >> levels)
    total = float(max(sum(sizes) + (n >> levels), 1))
    done = float(n >> levels)
    report(done / total)
    for size in reversed(sizes):
        half = size // 2
        value = value * value * gmpy2.comb(size, half)
        if size % 2:
            value *= half + 1
        done += size
        report(done / total)
    return value


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
            from_upload=factorial_from_upload,
            input_model=factorial_input(settings.max_n),
            formats=(ResultFormat("decimal"), ResultFormat("hex")),
            limits={"max_n": settings.max_n},
            deterministic=True,
        )
    ]
