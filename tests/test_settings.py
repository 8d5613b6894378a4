"""Settings: defaults for a local machine, FACTQ_ variables, checked limits."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from factq.settings import Settings


def test_defaults_work_on_a_local_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FACTQ_NAMESPACE", "FACTQ_MAX_N", "FACTQ_REDIS_URL", "FACTQ_AMQP_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.redis_url.get_secret_value() == "redis://127.0.0.1:6379/0"
    assert settings.amqp_url.get_secret_value() == "amqp://guest:guest@127.0.0.1:5672/"
    assert settings.namespace == "factq"
    assert settings.max_n == 1_000_000
    assert settings.max_batch == 1_000
    assert settings.max_attempts == 5
    assert settings.result_ttl_s == 86_400
    assert settings.broker_consumer_timeout_s == 1_800


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTQ_MAX_N", "500")
    monkeypatch.setenv("FACTQ_NAMESPACE", "staging")
    settings = Settings()
    assert settings.max_n == 500
    assert settings.namespace == "staging"


def test_secrets_are_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTQ_AMQP_URL", "amqp://user:hunter2@rabbit:5672/")
    monkeypatch.setenv("FACTQ_WORKER_TOKEN", "s3cret-token")
    shown = repr(Settings())
    assert "hunter2" not in shown
    assert "s3cret-token" not in shown


def test_job_timeout_must_stay_below_the_broker_consumer_timeout() -> None:
    with pytest.raises(ValidationError, match="consumer_timeout"):
        Settings(job_timeout_s=1800, broker_consumer_timeout_s=1800)
    # Not safely below: nothing left to end the process and store the outcome.
    with pytest.raises(ValidationError, match="minus 60 s"):
        Settings(job_timeout_s=1750, broker_consumer_timeout_s=1800)
    assert Settings(job_timeout_s=1740, broker_consumer_timeout_s=1800).job_timeout_s == 1740


@pytest.mark.parametrize("namespace", ["", "has space", "a:b", "x" * 65])
def test_namespace_is_a_safe_name(namespace: str) -> None:
    with pytest.raises(ValidationError):
        Settings(namespace=namespace)
