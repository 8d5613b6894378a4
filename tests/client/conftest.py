"""A real `factq api` and `factq worker` per test, in the test's own namespace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from factq.settings import Settings
from tests.support.service import Service, running_service


@pytest.fixture
def service(e2e_settings: Settings, tmp_path: Path) -> Iterator[Service]:
    logs = tmp_path / "logs"
    logs.mkdir()
    with running_service(e2e_settings, logs) as service:
        yield service
