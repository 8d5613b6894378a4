"""The incremental reader of flat JSON objects behind the streamed update route:
the same values as json.loads however the body is cut, and a clear refusal of
anything else."""

from __future__ import annotations

import json
from typing import Any

import pytest

from factq.api.flat_json import FlatObjectReader
from factq.errors import InvalidInput


def read(body: bytes, size: int) -> dict[str, str]:
    values: dict[str, bytes] = {}

    def take(key: str, piece: bytes) -> None:
        values[key] = values.get(key, b"") + piece

    reader = FlatObjectReader(take)
    for start in range(0, len(body), size):
        reader.feed(body[start : start + size])
    return {key: values.get(key, b"").decode() for key in reader.close()}


OBJECTS: list[dict[str, Any]] = [
    {"id": "abc", "status": "done", "output": "123" * 1000},
    {"a": 'quote " backslash \\ newline \n tab \t slash / é 😀 \u0001', "b": ""},
    {},
]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1 << 20])
@pytest.mark.parametrize("ascii_only", [True, False])
def test_any_cut_of_a_body_reads_as_json_loads_does(size: int, ascii_only: bool) -> None:
    for value in OBJECTS:
        body = json.dumps(value, ensure_ascii=ascii_only).encode()
        assert read(body, size) == value


def test_a_lone_surrogate_is_read_as_json_allows_it() -> None:
    assert read(b'{"output": "\\ud800", "id": "x"}', 1) == {"output": "\ufffd", "id": "x"}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"a": 1}', "JSON string"),
        (b'{"a": {"b": "c"}}', "JSON string"),
        (b'{"a": "x"} x', "after the object"),
        (b'{"a": "x"', "ends before"),
        (b"", "ends before"),
        (b"[", "unexpected"),
        (b'{"a": "x", "a": "y"}', "twice"),
        (b'{"a" "x"}', "unexpected"),
        (b'{"a": "x",}', "unexpected"),
        (b'{"a": "\\q"}', "invalid escape"),
        (b'{"a": "\\uzzzz"}', "invalid \\u escape"),
        (b'{"a": "x\ny"}', "control character"),
    ],
)
def test_anything_else_is_refused_clearly(body: bytes, says: str) -> None:
    with pytest.raises(InvalidInput, match=says.replace("\\", "\\\\")):
        read(body, 3)
