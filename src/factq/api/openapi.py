"""The OpenAPI document says what the API really answers: the contract's error
shape, each error status a route can give, and what this deployment accepts
(its tasks, each with its own input schema, and their result formats), so
that a request valid by the document is one the API takes.

Each route declares the errors it can give, in its decorator, with
`error_responses` and the errors named here; nothing else adds any (FastAPI's
own 422 of a route without a body only gets the truth: it is never sent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from factq.settings import Settings
from factq.tasks import TaskRegistry

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


@dataclass(frozen=True, slots=True)
class RouteError:
    """An error status a route can give, and when (with the error types of API.md)."""

    status: int
    description: str


UNAVAILABLE = RouteError(
    503,
    "Redis or RabbitMQ is down (unavailable), or every Redis connection of the API "
    "process is busy (overloaded); see Retry-After.",
)
QUEUE_FULL = RouteError(503, "The queue is full (queue_full); see Retry-After.")
INVALID_REQUEST = RouteError(
    400, "A query parameter or header is not acceptable (invalid_request)."
)
UNAUTHORIZED = RouteError(
    401, "API keys are on and the key is missing or not valid (unauthorized)."
)
FORBIDDEN = RouteError(403, "No or wrong worker token, or none configured (forbidden).")
NOT_FOUND = RouteError(404, "No such job, or another key's (not_found).")
ALREADY_FINISHED = RouteError(409, "The job has already finished (already_finished).")
IDEMPOTENCY_CONFLICT = RouteError(
    409, "An Idempotency-Key reused with another body (idempotency_conflict)."
)
PAYLOAD_TOO_LARGE = RouteError(413, "The body is over FACTQ_MAX_BODY_BYTES (payload_too_large).")
UNSUPPORTED_MEDIA_TYPE = RouteError(
    415, "The body is not sent as application/json (unsupported_media_type)."
)
RATE_LIMITED = RouteError(
    429, "Over the submission rate or the jobs in flight (rate_limited); see Retry-After."
)


def error_responses(*errors: RouteError) -> dict[int | str, dict[str, Any]]:
    """A route's `responses`: each error it can give, in the error shape; two
    errors of one status share its entry."""
    descriptions: dict[int, list[str]] = {}
    for error in errors:
        descriptions.setdefault(error.status, []).append(error.description)
    return {
        status: {
            "description": " ".join(texts),
            "content": {"application/json": {"schema": ERROR_SCHEMA}},
        }
        for status, texts in sorted(descriptions.items())
    }


def install_openapi(app: FastAPI, registry: TaskRegistry, settings: Settings) -> None:
    """Build the document once, with the deployment's tasks filled in."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    _validation_error_not_sent(operation)
                    for parameter in operation.get("parameters", []):
                        _not_nullable(parameter)
            _describe_deployment(schema, registry, settings)
            schema.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
            schema.get("components", {}).get("schemas", {}).pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _validation_error_not_sent(operation: dict[str, Any]) -> None:
    """FastAPI documents a 422 of its own validation error for a route with
    parameters; bad parameters are a 400 here, so that 422 is never sent."""
    responses: dict[str, Any] = operation.get("responses", {})
    if "422" in responses and "requestBody" not in operation:
        responses["422"] = {
            "description": "Not sent: bad parameters are a 400.",
            "content": {"application/json": {"schema": ERROR_SCHEMA}},
        }


def _not_nullable(parameter: dict[str, Any]) -> None:
    """A query parameter or header is absent or a string, never null: keep the
    schema's non-null branch."""
    branches = parameter.get("schema", {}).get("anyOf")
    if branches and {"type": "null"} in branches:
        rest = [branch for branch in branches if branch != {"type": "null"}]
        if len(rest) == 1:
            schema = {key: value for key, value in parameter["schema"].items() if key != "anyOf"}
            parameter["schema"] = {**rest[0], **schema}


def _describe_deployment(
    schema: dict[str, Any], registry: TaskRegistry, settings: Settings
) -> None:
    """Each task's own input schema, the result formats and the limits, from the
    registry and the settings."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    request = components["JobRequest"]
    request["properties"]["task"]["enum"] = sorted(registry)
    branches = []
    for name, task in sorted(registry.items()):
        input_schema = task.input_model.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        components.update(input_schema.pop("$defs", {}))
        components[f"{name}_input"] = input_schema
        branches.append(
            {
                "properties": {
                    "task": {"const": name},
                    "input": {"$ref": f"#/components/schemas/{name}_input"},
                }
            }
        )
    request["oneOf"] = branches
    if not settings.webhook_secret.get_secret_value():
        # Webhooks are off here: a job asking for one is refused.
        request["properties"].pop("webhook", None)
        components.pop("WebhookRequest", None)
    batch = components["BatchRequest"]["properties"]["jobs"]
    batch |= {"minItems": 1, "maxItems": settings.max_batch}
    formats = sorted({fmt.name for task in registry.values() for fmt in task.formats})
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if path == "/v1/jobs/{job_id}/result" and parameter["name"] == "format":
                    parameter["schema"] = {**parameter["schema"], "enum": formats}
                if path == "/factorial" and parameter["name"] == "no" and "factorial" in registry:
                    # Digits on the wire, as an integer's are: one up to the task's limit.
                    limit = registry["factorial"].limits.get("max_n", settings.max_n)
                    parameter["schema"] = {
                        "type": "integer",
                        "minimum": 0,
                        "maximum": limit,
                        "description": parameter["schema"].get("description", ""),
                    }
