"""The API's own docs: Swagger UI at `/docs` and Redoc at `/redoc`.

FastAPI's pages load their scripts, style, favicon and fonts from CDNs, so
on a machine that reaches nothing but itself they stay blank. These are the
same pages with every file served from here, out of the `fastapi-offline`
package's copies (Swagger UI: Apache-2.0, Redoc: MIT), and a
Content-Security-Policy that keeps the browser from asking any other host.
"""

from __future__ import annotations

from typing import Final

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

DOCS_URL: Final = "/docs"
REDOC_URL: Final = "/redoc"
ASSETS_URL: Final = "/docs/assets"
OAUTH2_REDIRECT_URL: Final = "/docs/oauth2-redirect"

# Swagger UI would otherwise offer a badge that sends the document to
# validator.swagger.io.
SWAGGER_UI_PARAMETERS: Final = {"validatorUrl": None}

# Nothing from another host. Redoc's sidebar always asks cdn.redoc.ly for its
# logo, with no option to stop it: refused here before any request leaves,
# it hides the image. The inline parts are Swagger UI's start-up script and
# both pages' generated styles; Redoc searches in a worker made from a blob.
CONTENT_SECURITY_POLICY: Final = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "worker-src 'self' blob:",
        "base-uri 'none'",
        "object-src 'none'",
    ]
)


def install_docs(app: FastAPI) -> None:
    """Serve the docs pages and their files; for an app made with
    `docs_url=None, redoc_url=None`. None of it is in the OpenAPI document."""
    openapi_url = app.openapi_url
    if openapi_url is None:
        return

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root_path(request)
        return _with_policy(
            get_swagger_ui_html(
                openapi_url=root + openapi_url,
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
                oauth2_redirect_url=root + OAUTH2_REDIRECT_URL,
                init_oauth=app.swagger_ui_init_oauth,
                swagger_ui_parameters={
                    **SWAGGER_UI_PARAMETERS,
                    **(app.swagger_ui_parameters or {}),
                },
            )
        )

    async def oauth2_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        root = _root_path(request)
        return _with_policy(
            get_redoc_html(
                openapi_url=root + openapi_url,
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
                with_google_fonts=False,
            )
        )

    app.add_route(DOCS_URL, swagger_ui, include_in_schema=False)
    app.add_route(OAUTH2_REDIRECT_URL, oauth2_redirect, include_in_schema=False)
    app.add_route(REDOC_URL, redoc, include_in_schema=False)
    app.mount(ASSETS_URL, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")


def _root_path(request: Request) -> str:
    """The prefix a proxy serves the app under, as FastAPI's own docs use it."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


def _with_policy(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response
