"""The figures of a fault run: what was done to the service, and what became of the jobs."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import ClassVar


@dataclass
class Figures:
    seed: int
    jobs: int = 0
    worker_kills: int = 0
    kills_mid_job: int = 0
    rabbitmq_restarts: int = 0
    redis_restarts: int = 0
    lost: int = 0
    stuck: int = 0
    not_succeeded: int = 0
    completed_twice: int = 0
    executions: int = 0
    re_executions: int = 0
    re_executions_after_kill: int = 0
    re_executions_after_restart: int = 0
    refused_but_ran: int = 0
    submissions_made_twice: int = 0
    answers_503: int = 0
    answers_503_redis_back: int = 0
    slowest_503_s: float = 0.0
    orphans: int = 0
    runtime_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    ROWS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("jobs", "jobs accepted (202), all inputs distinct"),
        ("worker_kills", "workers SIGKILLed (and replaced)"),
        ("kills_mid_job", "... of them while running a job"),
        ("rabbitmq_restarts", "RabbitMQ restarts (stop_app, start_app)"),
        ("redis_restarts", "Redis restarts (SIGKILL, AOF reload)"),
        ("lost", "lost (accepted, then gone)"),
        ("stuck", "stuck (not final at the deadline)"),
        ("not_succeeded", "final but not succeeded with the right result"),
        ("completed_twice", "completed twice (terminal events > 1)"),
        ("executions", "executions (lines in the task's log)"),
        ("re_executions", "re-executions"),
        ("re_executions_after_kill", "... after a kill of the worker running it"),
        ("re_executions_after_restart", "... after RabbitMQ gave back a running job's message"),
        ("refused_but_ran", "submissions answered 503 that ran anyway"),
        ("submissions_made_twice", "... or made two jobs, retried with their Idempotency-Key"),
        ("answers_503", "503 answers (all with Retry-After)"),
        ("answers_503_redis_back", "... to reads just after Redis was back (stale pool)"),
        ("slowest_503_s", "slowest 503 answer, s"),
        ("orphans", "pool processes outliving their killed worker"),
        ("runtime_s", "runtime, s"),
    )

    def table(self) -> str:
        width = max(len(label) for _, label in self.ROWS)
        lines = [f"factq fault suite, seed {self.seed} (FACTQ_FAULT_SEED={self.seed} repeats it)"]
        lines += [f"  {label:<{width}}  {getattr(self, name):>8g}" for name, label in self.ROWS]
        return "\n".join(lines)

    def save(self) -> None:
        """Append as one JSON line to $FACTQ_FAULT_REPORT, when set (scripts/soak.sh)."""
        path = os.environ.get("FACTQ_FAULT_REPORT")
        if path:
            with open(path, "a") as file:
                file.write(json.dumps(asdict(self)) + "\n")
