"""Every error becomes `{"error": {"type", "message"}}` here, and only here."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match

from factq import errors, metrics
from factq.api.deps import JOB_ID
from factq.errors import first_problem, validation_details

logger = logging.getLogger(__name__)

HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")

STATUS_CODES: dict[type[errors.FactqError], int] = {
    errors.InvalidRequest: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.JobNotFound: 404,
    errors.JobStateConflict: 409,
    errors.InvalidInput: 422,
    errors.UnknownTask: 422,
    errors.InvalidWebhook: 422,
    errors.PayloadTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.RateLimited: 429,
    errors.IdempotencyConflict: 409,
    errors.BackendUnavailable: 503,
    errors.QueueFull: 503,
}

# Refusals counted as such (factq_api_rejected_requests_total): the caller's
# key, its rate, or the service's capacity, not a mistake in the request.
REJECTIONS = frozenset({401, 413, 429, 503})

HTTP_ERROR_TYPES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(
    status_code: int,
    error_type: str,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": error_type, "message": message}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status_code, headers=headers)


def status_code_for(exc: errors.FactqError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return 500


async def _factq_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.FactqError)
    status_code = status_code_for(exc)
    # A 413 is counted where it is answered (BodySizeLimit), which also raises
    # it, to end the app's read: its answer here is never sent.
    if status_code in REJECTIONS and status_code != 413:
        metrics.rejected(status_code, exc.type).inc()
    headers = None
    if isinstance(exc, errors.RetryLater):
        headers = {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, errors.Unauthorized):
        headers = {"WWW-Authenticate": "Bearer"}
    if status_code >= 500:
        logger.warning("%s %s: %s", request.method, request.url.path, exc.message)
    return error_response(status_code, exc.type, exc.message, details=exc.details, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = validation_details(exc.errors(), in_body=True)
    in_body = all(error["loc"][:1] == ("body",) for error in exc.errors())
    message = first_problem(details)
    if in_body:
        return error_response(422, "invalid_input", message, details=details)
    return error_response(400, "invalid_request", message, details=details)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400:
        # FastAPI's only 400: a body it could not even decode (not UTF-8, say).
        return error_response(422, "invalid_input", "malformed JSON: the body cannot be decoded")
    error_type = HTTP_ERROR_TYPES.get(exc.status_code, "http_error")
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 405:
        # Starlette names the methods of the first route that matched the path
        # only; a path served by several routes allows the methods of them all.
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    return error_response(exc.status_code, error_type, str(exc.detail), headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """The methods some route serves this path with, asked of each route as the
    router would ask it. A `{job_id}` that is no job id (`/v1/jobs/batch`) is
    served by no job route: it could only be a 404."""
    allowed = []
    for method in HTTP_METHODS:
        for route in _routes(request.app.router.routes):
            match, child = route.matches({**request.scope, "method": method})
            job_id = child.get("path_params", {}).get("job_id")
            if match == Match.FULL and (job_id is None or JOB_ID.fullmatch(job_id)):
                allowed.append(method)
                break
    return allowed


def _routes(routes: Sequence[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, those of included routers too (FastAPI wraps each router it
    includes; a wrapper it may not unwrap is asked as a whole)."""
    for route in routes:
        inner = getattr(getattr(route, "original_router", None), "routes", None)
        if inner is None:
            yield route
        else:
            yield from _routes(inner)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error in %s %s", request.method, request.url.path)
    return error_response(500, "internal", "internal error; the server log has the details")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.FactqError, _factq_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
