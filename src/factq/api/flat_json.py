"""An incremental reader of a flat JSON object whose values are strings, for bodies
too large to hold: `{"id": "...", "status": "done", "output": "<5.5 million digits>"}`.

Fed the body chunk by chunk, it hands each value to its consumer piece by
piece as it arrives, so a value of megabytes is never held whole; any other
shape (nesting, numbers, a duplicate key, trailing data) is an `InvalidInput`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import Enum, auto

from factq.errors import InvalidInput

WHITESPACE = b" \t\r\n"
ESCAPES = {
    ord('"'): b'"',
    ord("\\"): b"\\",
    ord("/"): b"/",
    ord("b"): b"\b",
    ord("f"): b"\f",
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
}
MAX_KEY_BYTES = 64


class _State(Enum):
    START = auto()
    BEFORE_KEY = auto()
    FIRST_KEY = auto()
    KEY = auto()
    COLON = auto()
    BEFORE_VALUE = auto()
    VALUE = auto()
    AFTER_VALUE = auto()
    END = auto()


class FlatObjectReader:
    """Feed it the body; `value(key, piece)` receives each value's text, unescaped,
    in pieces (UTF-8 bytes; an escape is never split between two pieces)."""

    def __init__(self, value: Callable[[str, bytes], None]) -> None:
        self._value = value
        self._state = _State.START
        self._key = bytearray()
        self._current = ""
        self._seen: set[str] = set()
        self._pending = b""  # an escape split at the end of a chunk

    def feed(self, chunk: bytes) -> None:
        data = self._pending + chunk
        self._pending = b""
        i = 0
        while i < len(data):
            if self._state is _State.VALUE:
                i = self._in_string(data, i, self._emit)
            elif self._state is _State.KEY:
                i = self._in_string(data, i, self._key_piece)
            else:
                i = self._between(data, i)

    def close(self) -> set[str]:
        """The keys read; `InvalidInput` when the object did not end."""
        if self._state is not _State.END or self._pending:
            raise InvalidInput("malformed JSON: the body ends before its object does")
        return self._seen

    def _between(self, data: bytes, i: int) -> int:
        byte = data[i]
        if byte in WHITESPACE:
            return i + 1
        state = self._state
        expected = {
            _State.START: b"{",
            _State.FIRST_KEY: b'"}',
            _State.BEFORE_KEY: b'"',
            _State.COLON: b":",
            _State.BEFORE_VALUE: b'"',
            _State.AFTER_VALUE: b",}",
            _State.END: b"",
        }[state]
        if byte not in expected:
            raise InvalidInput(self._unexpected(byte, state))
        if state is _State.START:
            self._state = _State.FIRST_KEY
        elif byte == ord("}"):
            self._state = _State.END
        elif state in (_State.FIRST_KEY, _State.BEFORE_KEY):
            self._key.clear()
            self._state = _State.KEY
        elif state is _State.COLON:
            self._state = _State.BEFORE_VALUE
        elif state is _State.BEFORE_VALUE:
            self._state = _State.VALUE
        else:  # a comma
            self._state = _State.BEFORE_KEY
        return i + 1

    def _in_string(self, data: bytes, i: int, piece: Callable[[bytes], None]) -> int:
        """Read string text from i up to its closing quote; the index after what was read."""
        quote = data.find(b'"', i)  # found once: a string of escapes stays linear
        while i < len(data):
            if 0 <= quote < i:
                quote = data.find(b'"', i)
            backslash = data.find(b"\\", i)
            stop = min(j for j in (quote, backslash, len(data)) if j >= 0)
            if stop > i:
                text = data[i:stop]
                if min(text) < 0x20:
                    raise InvalidInput("malformed JSON: a control character in a string")
                piece(text)
            if stop == len(data):
                return stop
            if stop == quote:
                self._end_string()
                return stop + 1
            escaped = self._escape(data, stop)
            if escaped is None:  # split by the chunk's end: read it with the next one
                self._pending = data[stop:]
                return len(data)
            text, i = escaped
            piece(text)
        return i

    @staticmethod
    def _escape(data: bytes, at: int) -> tuple[bytes, int] | None:
        """The text of the escape at `at` and the index after it; None when the
        chunk ends inside it."""
        if at + 1 >= len(data):
            return None
        kind = data[at + 1]
        if kind in ESCAPES:
            return ESCAPES[kind], at + 2
        if kind != ord("u"):
            raise InvalidInput("malformed JSON: an invalid escape in a string")
        end = _unicode_escape_end(data, at)
        if end is None:
            return None
        try:
            text = json.loads(b'"' + data[at:end] + b'"')
        except ValueError:
            raise InvalidInput("malformed JSON: an invalid \\u escape in a string") from None
        # A lone surrogate has no UTF-8 form: U+FFFD stands for it.
        text = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
        return text.encode("utf-8"), end

    def _key_piece(self, text: bytes) -> None:
        self._key += text
        if len(self._key) > MAX_KEY_BYTES:
            raise InvalidInput("malformed body: a key longer than any this route takes")

    def _emit(self, text: bytes) -> None:
        self._value(self._current, text)

    def _end_string(self) -> None:
        if self._state is _State.KEY:
            key = self._key.decode("utf-8", errors="replace")
            if key in self._seen:
                raise InvalidInput(f"the key {key!r} is given twice")
            self._seen.add(key)
            self._current = key
            self._state = _State.COLON
        else:
            self._state = _State.AFTER_VALUE

    @staticmethod
    def _unexpected(byte: int, state: _State) -> str:
        if state is _State.BEFORE_VALUE:
            return "invalid input: every value of this body is a JSON string"
        if state is _State.END:
            return "malformed JSON: data after the object"
        return f"malformed JSON: unexpected {chr(byte)!r}"


def _unicode_escape_end(data: bytes, at: int) -> int | None:
    """Where the \\uXXXX escape at `at` ends: after its low half too when it is a
    high surrogate followed by one (json decodes the pair; a lone half, which
    JSON allows, becomes U+FFFD). None when the chunk ends too soon to tell."""
    end = at + 6
    if end > len(data):
        return None
    try:
        code = int(data[at + 2 : end], 16)
    except ValueError:
        raise InvalidInput("malformed JSON: an invalid \\u escape in a string") from None
    if not 0xD800 <= code <= 0xDBFF:
        return end
    if end + 2 > len(data):
        return None
    if data[end : end + 2] != b"\\u":
        return end
    return end + 6 if end + 6 <= len(data) else None
