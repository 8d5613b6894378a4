"""Request bodies over the limit are refused with 413, before they are read whole."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from factq import metrics
from factq.api.errors import error_response
from factq.errors import PayloadTooLarge


class BodySizeLimit:
    """Refuse a body whose Content-Length is over the limit before reading it,
    and one sent without a length as soon as it goes over. A path may have a
    limit of its own (`per_path`)."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, per_path: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = dict(per_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.per_path.get(scope["path"], self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            await _refusal(max_bytes)(scope, receive, send)
            return
        seen = 0
        refused = False

        async def counted() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes and not refused:
                    refused = True
                    await _refusal(max_bytes)(scope, receive, send)
                    # Ends the app's read; whatever it answers then is dropped.
                    raise PayloadTooLarge("request body over the limit")
            return message

        async def unless_refused(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counted, unless_refused)


def _refusal(max_bytes: int) -> ASGIApp:
    metrics.rejected(413, PayloadTooLarge.type).inc()
    return error_response(
        413, PayloadTooLarge.type, f"the request body is over the limit of {max_bytes} bytes"
    )
