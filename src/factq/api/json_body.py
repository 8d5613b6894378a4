"""JSON request bodies: sent as JSON, read with `factq.json_numbers`.

Routes that take a body use `JSONBodyRoute`. A body sent with another media
type (a form, text, or none named) is refused with 415 and told what to
send, rather than validated as if it were an object and refused with a
puzzling message.
"""

from __future__ import annotations

import email.message
import functools
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from factq import json_numbers
from factq.errors import UnsupportedMediaType

SEND_JSON = "send the body as JSON, with the header Content-Type: application/json"


def refuse_media_type(content_type: str | None) -> NoReturn:
    named = f"it was sent as {content_type!r}" if content_type else "no type was named"
    raise UnsupportedMediaType(f"{SEND_JSON} ({named})")


def is_json(content_type: str | None) -> bool:
    """`application/json`, or any `application/...+json`, parameters aside."""
    if not content_type:
        return False
    return _is_json_type(content_type)


# Clients send a handful of distinct values: each is parsed once.
@functools.lru_cache(maxsize=256)
def _is_json_type(content_type: str) -> bool:
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class JSONRequest(Request):
    """A request whose JSON body keeps over-long integers as `LongInteger`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json_numbers.loads(await self.body())
        return self._json


class JSONBodyRoute(APIRoute):
    """A route whose body, when it takes one, must be sent as JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def handle(request: Request) -> Response:
            request = JSONRequest(request.scope, request.receive)
            content_type = request.headers.get("content-type")
            # An empty body without a type is a missing body, answered as such.
            if not is_json(content_type) and (content_type or await request.body()):
                refuse_media_type(content_type)
            return await handler(request)

        return handle
