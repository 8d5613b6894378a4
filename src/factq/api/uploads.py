"""The body of `POST /factorial/update`, streamed: a worker's output of millions of
digits goes into Redis as it arrives, never whole into the API's memory.

The route's body limit is its own, the size of the largest output the
deployment allows (the digits of FACTQ_MAX_N!), not FACTQ_MAX_BODY_BYTES. The
digits are appended to an upload key in the job's slot (`output` usually
follows `id`; sent before it, they wait in memory, within that limit), the
task's other formats are made from the upload (`factq.api.conversions`), and
the job's finish moves all the uploads into its result keys at once.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from typing import Final

from starlette.requests import Request

from factq.api.deps import JOB_ID
from factq.api.flat_json import FlatObjectReader
from factq.errors import InvalidInput
from factq.settings import Settings
from factq.state.store import Store

FIELDS: Final = frozenset({"id", "status", "output"})
STATUSES: Final = frozenset({"processing", "done", "failed"})
MAX_SHORT_FIELD_BYTES: Final = 256
# A failure's message: the start of `output`, when the status is failed.
MAX_MESSAGE_BYTES: Final = 64 * 1024
# Room for the rest of the body around the digits.
BODY_OVERHEAD_BYTES: Final = 64 * 1024
DIGIT_BYTES: Final = frozenset(b"0123456789")


def update_body_limit(settings: Settings) -> int:
    """The largest body the update route takes: the digits of max_n! and some room."""
    n = settings.max_n
    digits = 1 if n < 2 else math.floor(math.lgamma(n + 1) / math.log(10)) + 1
    return max(settings.max_body_bytes, digits + BODY_OVERHEAD_BYTES)


@dataclass
class Update:
    """What an update body said; the digits of `output` are in `upload`, not here."""

    job_id: str = ""
    status: str = ""
    upload: str = ""
    digits: int = 0
    is_decimal: bool = True
    message: bytes = b""
    _pending: list[bytes] = field(default_factory=list)
    _short: dict[str, bytearray] = field(default_factory=dict)

    def take(self, key: str, piece: bytes) -> None:
        """A piece of a value, as the reader hands it over."""
        if key == "output":
            self._take_output(piece)
        elif key in FIELDS:
            value = self._short.setdefault(key, bytearray())
            value += piece
            if len(value) > MAX_SHORT_FIELD_BYTES:
                raise InvalidInput(f"{key}: longer than any {key} this route takes")
        else:
            raise InvalidInput(f"{key[:64]}: not a field of this body (id, status, output)")

    def _take_output(self, piece: bytes) -> None:
        self.digits += len(piece)
        self.is_decimal = self.is_decimal and DIGIT_BYTES.issuperset(piece)
        if len(self.message) < MAX_MESSAGE_BYTES:
            self.message += piece[: MAX_MESSAGE_BYTES - len(self.message)]
        self._pending.append(piece)

    def short(self, key: str) -> str:
        return self._short.get(key, bytearray()).decode("utf-8", errors="replace")

    async def flush(self, store: Store) -> None:
        """Append the digits received so far to the upload, once the job is known."""
        if not self.upload:
            job_id = self.short("id")
            if "id" not in self._short or not JOB_ID.fullmatch(job_id):
                return
            self.upload = store.keys.upload(job_id, secrets.token_hex(8))
        if self._pending:
            data, self._pending = b"".join(self._pending), []
            await store.results.append_upload(self.upload, data)


async def read_update(request: Request, store: Store) -> Update:
    """Read the body chunk by chunk into an `Update`, its digits into Redis."""
    update = Update()
    reader = FlatObjectReader(update.take)
    try:
        async for chunk in request.stream():
            reader.feed(chunk)
            await update.flush(store)
        keys = reader.close()
        await update.flush(store)
        missing = sorted({"id", "status"} - keys)
        if missing:
            raise InvalidInput(f"{', '.join(missing)}: field required")
        update.job_id, update.status = update.short("id"), update.short("status")
        if update.status not in STATUSES:
            raise InvalidInput("status: must be processing, done or failed")
    except BaseException:
        # A body refused (or cut off) leaves nothing of itself in Redis.
        await store.results.drop_uploads([update.upload] if update.upload else [])
        raise
    return update
