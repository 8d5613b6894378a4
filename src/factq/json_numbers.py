"""JSON numbers read without unbounded work.

Integers are converted within Python's limit on the digits it reads (4,300
by default, against quadratic-time parsing). A longer one is kept as a
`LongInteger` rather than failing the whole document as malformed, so that
validation can name the field and the limit it is over.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class LongInteger:
    """A JSON integer with more digits than are converted: never a valid value."""

    digits: int
    negative: bool

    def describe(self) -> str:
        sign = "a negative" if self.negative else "an"
        return f"{sign} integer of {self.digits:,} digits"


def parse_int(literal: str) -> int | LongInteger:
    digits = len(literal) - literal.startswith("-")
    limit = sys.get_int_max_str_digits()
    if limit and digits > limit:
        return LongInteger(digits, literal.startswith("-"))
    return int(literal)


def loads(document: bytes | str) -> Any:
    """`json.loads`, with over-long integers as `LongInteger`."""
    return json.loads(document, parse_int=parse_int)
