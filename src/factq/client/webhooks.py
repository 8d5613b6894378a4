"""Verifying factq's webhook deliveries on the receiving side.

    verifier = WebhookVerifier(secret)            # the FACTQ_WEBHOOK_SECRET
    event = verifier.verify(body, headers)        # raises InvalidDelivery

A delivery is refused when its signature does not match its body, when its
timestamp is more than five minutes off, or when its `webhook-id` was seen
already (a replay, or a retry of one already handled). Remembered ids are kept
in memory for the tolerance window; pass `seen` to share them between
processes (for example a set backed by your database).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, MutableMapping
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

TOLERANCE_S = 5 * 60


class InvalidDelivery(Exception):
    """Tampered, stale, malformed or replayed: do not act on it."""


class WebhookVerifier:
    """Checks signatures (Standard Webhooks), freshness and replays."""

    def __init__(self, secret: str, *, seen: MutableMapping[str, float] | None = None) -> None:
        self._webhook = Webhook(secret)
        self._seen: MutableMapping[str, float] = {} if seen is None else seen

    def verify(self, body: bytes | str, headers: Mapping[str, str]) -> dict[str, Any]:
        """The delivery's JSON (`type`, `timestamp`, `data`), once; else `InvalidDelivery`."""
        lowered = {name.lower(): value for name, value in headers.items()}
        try:
            # The library also refuses timestamps more than five minutes off.
            event: dict[str, Any] = self._webhook.verify(body, lowered)
        except WebhookVerificationError as exc:
            raise InvalidDelivery(str(exc)) from None
        delivery_id = lowered["webhook-id"]
        now = time.time()
        self._forget_older_than(now - TOLERANCE_S)
        if delivery_id in self._seen:
            raise InvalidDelivery(f"delivery {delivery_id} was received already")
        self._seen[delivery_id] = now
        return event

    def _forget_older_than(self, cutoff: float) -> None:
        # A replay older than the window fails on its timestamp anyway.
        for delivery_id, at in list(self._seen.items()):
            if at < cutoff:
                del self._seen[delivery_id]
