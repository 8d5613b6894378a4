"""The OpenAPI document says what the API really answers: the contract's error
shape, and each error status a route can give."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": {"type": "object"}},
            },
        }
    },
}

# Errors any route may give, by what it takes.
EVERY_ROUTE = {"503": "Redis or RabbitMQ is down (unavailable); see Retry-After."}
WITH_PARAMETERS = {"400": "A query parameter or header is not acceptable (invalid_request)."}
WITH_BODY = {
    "413": "The body is over FACTQ_MAX_BODY_BYTES (payload_too_large).",
    "422": "The body or the task's input is not acceptable (invalid_input, unknown_task).",
}
NEEDS_KEY = {"401": "API keys are on and the key is missing or not valid (unauthorized)."}
SUBMITS = {
    "409": "An Idempotency-Key reused with another body (idempotency_conflict).",
    "429": "Over the submission rate or the jobs in flight (rate_limited); see Retry-After.",
}
OPEN_PATHS = ("/healthz", "/readyz", "/")


def install_openapi(app: FastAPI) -> None:
    """Build the document once, with the error responses filled in."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            for path, operations in schema.get("paths", {}).items():
                for method, operation in operations.items():
                    _document_errors(path, method, operation)
            schema.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
            schema.get("components", {}).get("schemas", {}).pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_errors(path: str, method: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for status, description in _errors_of(path, method, operation).items():
        responses.setdefault(status, {"description": description})
    # FastAPI's own 422 describes its validation error, which we never send.
    if "422" in responses and "requestBody" not in operation:
        responses["422"]["description"] = "Not sent: bad parameters are a 400."
    for status, documented in responses.items():
        if status.startswith(("4", "5")):
            documented["content"] = {"application/json": {"schema": ERROR_SCHEMA}}


def _errors_of(path: str, method: str, operation: dict[str, Any]) -> dict[str, str]:
    errors: dict[str, str] = dict(EVERY_ROUTE)
    if operation.get("parameters"):
        errors |= WITH_PARAMETERS
    if "requestBody" in operation:
        errors |= WITH_BODY
    if path not in OPEN_PATHS:
        errors |= NEEDS_KEY
    if method == "post" and path in ("/v1/jobs", "/v1/jobs/batch", "/factorial"):
        errors |= SUBMITS
    if path == "/factorial":
        errors |= {"429": SUBMITS["429"]}
    if "{job_id}" in path or path == "/factorial/result":
        errors |= {"404": "No such job, or another key's (not_found)."}
    return errors
