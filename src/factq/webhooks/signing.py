"""Signing a delivery, as Standard Webhooks says (`factq.client.webhooks` verifies)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from standardwebhooks import Webhook


def signed_request(
    secret: str, delivery_id: str, event_type: str, job: dict[str, Any]
) -> tuple[bytes, dict[str, str]]:
    """The body and the Standard Webhooks headers of one delivery."""
    now = datetime.now(UTC)
    body = json.dumps(
        {"type": event_type, "timestamp": now.isoformat().replace("+00:00", "Z"), "data": job},
        separators=(",", ":"),
    )
    signature = Webhook(secret).sign(delivery_id, now, body)
    return body.encode(), {
        "content-type": "application/json",
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
