"""The OpenAPI document's error responses, as the routes declare them."""

from __future__ import annotations

from typing import Any

import pytest

from factq.api.app import create_app
from factq.api.openapi import ERROR_SCHEMA
from tests.conftest import make_settings

# The routes that need no API key.
OPEN_PATHS = ("/healthz", "/readyz", "/metrics")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    schema: dict[str, Any] = create_app(make_settings()).openapi()
    return schema


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


def test_every_error_is_documented_in_the_error_shape(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if not status.startswith(("4", "5")) or (path, status) == ("/readyz", "503"):
                continue
            schema = response["content"]["application/json"]["schema"]
            assert schema == ERROR_SCHEMA, (method, path, status)


def test_readyz_documents_its_own_answer_when_something_is_down(
    document: dict[str, Any],
) -> None:
    down = document["paths"]["/readyz"]["get"]["responses"]["503"]
    assert down["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Readiness"
    }


def test_each_route_documents_the_errors_of_what_it_takes(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        documented = set(operation["responses"])
        expected = {"503"}
        if operation.get("parameters"):
            expected |= {"400"}
        if "requestBody" in operation:
            expected |= {"413", "415", "422"}
        if path not in OPEN_PATHS:
            expected |= {"401"}
        if "{job_id}" in path or path in ("/factorial/result", "/factorial/update"):
            expected |= {"404"}
        assert expected <= documented, (method, path, sorted(expected - documented))


def test_the_parameter_only_routes_say_fastapis_422_is_never_sent(
    document: dict[str, Any],
) -> None:
    for method, path, operation in operations(document):
        if "422" in operation["responses"] and "requestBody" not in operation:
            assert operation["responses"]["422"]["description"].startswith("Not sent"), (
                method,
                path,
            )
    assert "HTTPValidationError" not in document["components"]["schemas"]
