"""The receiving side's verifier: tampered, stale and replayed deliveries are refused."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from factq.client.webhooks import InvalidDelivery, WebhookVerifier
from factq.webhooks.signing import signed_request

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
JOB = {"id": "ab" * 16, "status": "succeeded"}


def delivery(delivery_id: str = "job-1-completed") -> tuple[bytes, dict[str, str]]:
    return signed_request(SECRET, delivery_id, "job.completed", JOB)


def test_a_genuine_delivery_is_accepted_once() -> None:
    verifier = WebhookVerifier(SECRET)
    body, headers = delivery()
    event = verifier.verify(body, headers)
    assert event["type"] == "job.completed"
    assert event["data"] == JOB
    with pytest.raises(InvalidDelivery, match="already"):
        verifier.verify(body, headers)


def test_a_tampered_body_or_signature_is_refused() -> None:
    verifier = WebhookVerifier(SECRET)
    body, headers = delivery()
    with pytest.raises(InvalidDelivery):
        verifier.verify(body.replace(b"succeeded", b"failed"), headers)
    with pytest.raises(InvalidDelivery):
        verifier.verify(body, {**headers, "webhook-signature": "v1,AAAA"})
    other = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    with pytest.raises(InvalidDelivery):
        WebhookVerifier(other).verify(body, headers)


def test_a_stale_delivery_is_refused() -> None:
    old = datetime.now(UTC) - timedelta(minutes=6)
    body = b'{"type":"job.completed","timestamp":"x","data":{}}'
    headers = {
        "webhook-id": "old-1",
        "webhook-timestamp": str(int(old.timestamp())),
        "webhook-signature": Webhook(SECRET).sign("old-1", old, body.decode()),
    }
    with pytest.raises(InvalidDelivery):
        WebhookVerifier(SECRET).verify(body, headers)


def test_missing_headers_are_refused() -> None:
    body, headers = delivery()
    headers.pop("webhook-id")
    with pytest.raises(InvalidDelivery):
        WebhookVerifier(SECRET).verify(body, headers)


def test_seen_ids_can_be_shared() -> None:
    shared: dict[str, float] = {}
    body, headers = delivery("job-2-completed")
    WebhookVerifier(SECRET, seen=shared).verify(body, headers)
    with pytest.raises(InvalidDelivery):
        WebhookVerifier(SECRET, seen=shared).verify(body, headers)
