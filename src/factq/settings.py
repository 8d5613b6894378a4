"""All of factq's configuration: one frozen object, read from `FACTQ_*` variables."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# How far below the broker's consumer timeout a job's time limit must stay.
CONSUMER_TIMEOUT_MARGIN_S = 60.0

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]


class BatchSettings(BaseModel):
    """How a worker gathers a batched task's jobs into one call."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Items in one call (a job counts as many items as its task says it has);
    # 1 turns batching off. None: the task's own default.
    max_batch_size: int | None = Field(None, ge=1, le=4_096)
    # How long the first job of a batch waits for others to join it.
    max_batch_delay_ms: float | None = Field(None, ge=0, le=10_000)


class Settings(BaseSettings):
    """Settings shared by the API and the worker; build once, pass down."""

    model_config = SettingsConfigDict(env_prefix="FACTQ_", frozen=True, extra="ignore")

    # Backing services.
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    # The URL names any node of a Redis Cluster (the others are discovered).
    redis_cluster: bool = False
    # Replicas each state change that a reply or an acknowledgement depends on
    # must reach (Redis's WAIT) first: 0 trusts the master alone.
    redis_min_replicas: int = Field(0, ge=0, le=16)
    # One URL, or one per node of a RabbitMQ cluster, comma-separated: each is
    # tried in turn when connecting and reconnecting.
    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    # Replicas of each task's quorum queue when it is first declared
    # (x-quorum-initial-group-size); 0: RabbitMQ's default.
    quorum_initial_group_size: int = Field(0, ge=0, le=99)
    namespace: str = Field("factq", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    redis_max_connections: int = Field(100, ge=2)

    # Tasks and their limits.
    max_n: int = Field(1_000_000, ge=0)
    max_batch: int = Field(1_000, ge=1)
    task_modules: str = ""
    # The tasks a worker serves, comma-separated (`factq worker --tasks`); empty: all.
    worker_tasks: str = ""
    # Dynamic batching of a task that declares it, per task, over the task's own
    # defaults, as JSON: {"embed": {"max_batch_size": 32, "max_batch_delay_ms": 5}}.
    task_batching: dict[str, BatchSettings] = Field(default_factory=dict)
    # The embed task's input: texts per job, and characters per text.
    embed_max_texts: int = Field(64, ge=1, le=1_024)
    embed_max_chars: int = Field(2_000, ge=1, le=100_000)

    # Job lifetime.
    max_attempts: int = Field(5, ge=1, le=1000)
    result_ttl_s: int = Field(86_400, ge=1)
    result_cache_ttl_s: int = Field(86_400, ge=0)
    provisional_ttl_s: int = Field(300, ge=1)
    job_timeout_s: float = Field(300.0, gt=0)
    job_deadline_s: float | None = Field(None, gt=0)
    broker_consumer_timeout_s: float = Field(1_800.0, gt=0)
    queue_max_length: int = Field(100_000, ge=1)

    # Credentials and limits.
    api_keys: SecretStr = SecretStr("")
    worker_token: SecretStr = SecretStr("")
    allowed_origins: str = ""
    max_body_bytes: int = Field(1_000_000, ge=1024)
    rate_limit: str = ""
    max_in_flight_per_key: int = Field(0, ge=0)
    max_streams_per_caller: int = Field(100, ge=1)
    # Connections of one API process: 0 derives it from the open-file limit.
    max_connections: int = Field(0, ge=0)
    header_timeout_s: float = Field(10.0, gt=0)
    # Addresses whose X-Forwarded-For and X-Forwarded-Proto are believed
    # (uvicorn's forwarded_allow_ips: comma-separated, or *); none by default.
    forwarded_allow_ips: str = ""

    # Webhooks.
    webhook_secret: SecretStr = SecretStr("")
    webhook_allowed_hosts: str = ""
    webhook_timeout_s: float = Field(10.0, gt=0)
    webhook_max_attempts: int = Field(5, ge=1, le=20)
    webhook_retry_base_s: float = Field(1.0, gt=0)

    # Processes.
    concurrency: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    # Messages a worker holds per pool process: those beyond the processes wait
    # in the worker, still queued, so the next job starts without a broker round
    # trip. 1 hands every waiting job to whichever worker frees up first.
    prefetch_per_process: int = Field(4, ge=1, le=100)
    # API processes sharing the port (`factq api --workers`).
    api_workers: int = Field(1, ge=1, le=64)
    shutdown_grace_s: float = Field(30.0, ge=0)
    log_level: LogLevel = "info"
    # text: for people; json: one object a line, for a log pipeline.
    log_format: LogFormat = "text"
    # A worker's Prometheus /metrics port (`factq worker --metrics-port`); 0: none.
    metrics_port: int = Field(0, ge=0, le=65_535)

    @field_validator("rate_limit")
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        if value:
            # Imported here: only a process with a rate limit set needs the library
            # (the API's limiter), not every worker and pool process.
            import limits

            try:
                limits.parse(value)
            except ValueError:
                raise ValueError(f"rate_limit must look like 600/minute, not {value!r}") from None
        return value

    @model_validator(mode="after")
    def _check_timeouts(self) -> Settings:
        # The broker takes back a message whose consumer holds it past its
        # consumer timeout; a job allowed to run longer would be run twice.
        # The margin covers what follows the limit: ending the process, storing
        # the outcome, the acknowledgement.
        limit = self.broker_consumer_timeout_s - CONSUMER_TIMEOUT_MARGIN_S
        if self.job_timeout_s > limit:
            raise ValueError(
                f"job_timeout_s ({self.job_timeout_s:g}) must be at most "
                f"broker_consumer_timeout_s ({self.broker_consumer_timeout_s:g}) minus "
                f"{CONSUMER_TIMEOUT_MARGIN_S:g} s; raise the broker's consumer_timeout first, "
                "then FACTQ_BROKER_CONSUMER_TIMEOUT_S"
            )
        return self

    @property
    def result_cache_s(self) -> int:
        """How long a deterministic task's outcome answers identical jobs (0: never);
        no longer than results are kept."""
        return min(self.result_cache_ttl_s, self.result_ttl_s)

    @property
    def amqp_urls(self) -> list[str]:
        """The broker's URLs, from the comma-separated `amqp_url`, in the order tried."""
        urls = self.amqp_url.get_secret_value().split(",")
        return [url.strip() for url in urls if url.strip()]

    @property
    def api_key_list(self) -> list[str]:
        """The client keys of `api_keys` (comma-separated); none means keys are off."""
        return [key.strip() for key in self.api_keys.get_secret_value().split(",") if key.strip()]

    @property
    def allowed_origin_list(self) -> list[str]:
        """Browser origins besides the page's own, from `allowed_origins`."""
        return [o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip()]

    @property
    def worker_task_names(self) -> list[str]:
        """The tasks a worker serves, from `worker_tasks` (empty: every task)."""
        return [name.strip() for name in self.worker_tasks.split(",") if name.strip()]

    @property
    def task_module_names(self) -> list[str]:
        """Extra modules that define tasks, from the comma-separated `task_modules`."""
        return [name.strip() for name in self.task_modules.split(",") if name.strip()]
