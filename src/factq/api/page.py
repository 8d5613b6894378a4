"""The web page: `GET /` and its static files, shipped inside the package.

The page is plain HTML, CSS and JavaScript with no build step and nothing
fetched from elsewhere, so the API serves all of it and a strict
Content-Security-Policy holds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

# Next to this module both in an editable install and in a wheel
# (package-data `api/static/*`).
STATIC_DIR: Final = Path(__file__).resolve().with_name("static")

# Everything the page uses comes from its own origin; the WebSocket too
# ('self' covers ws: and wss: to the same host).
CONTENT_SECURITY_POLICY: Final = "; ".join(
    [
        "default-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ]
)

# Revalidate on each load (a cheap 304): a page and script from two versions
# of factq must never meet after an upgrade.
PAGE_HEADERS: Final = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class _StaticFiles(StaticFiles):
    """StaticFiles with the page's headers on every file."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(PAGE_HEADERS)
        return response


router = APIRouter(include_in_schema=False)


def static_files() -> StaticFiles:
    """The page's script, style and icon, for `app.mount("/static", ...)`."""
    return _StaticFiles(directory=STATIC_DIR)


@router.get("/", response_class=FileResponse)
async def index() -> FileResponse:
    """The page: submit jobs and watch them live."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)
