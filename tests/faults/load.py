"""The load under fault: jobs submitted through the API while things break, 503s
retried, and every answer the API gives checked against the contract."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

# No request may take longer: the API's own waits (a publish confirm, a free
# Redis connection) are bounded at 10 s, so past this the API hangs.
REQUEST_TIMEOUT_S = 20.0
# The contract's Retry-After is 5 s; a real client honours it, but this suite
# caps the pause to stay within CI time. Retrying sooner is harmless: the API
# answers 503 again until the backend is back.
RETRY_CAP_S = 0.5
MAX_GROUP = 8
# A few jobs run for seconds, so that faults land on long runs too.
LONG_JOB_SHARE = 0.04
SUBMIT_CONCURRENCY = 8
BURST = 16
KEY_CONFLICTS = 3


@dataclass
class ApiAnswers:
    """What the API answered under fault: counts, and answers the contract forbids."""

    counts: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    slowest_503_s: float = 0.0
    refused_at: list[tuple[float, str]] = field(default_factory=list)  # (monotonic, route)
    refused_once_redis_back: int = 0

    async def request(
        self, http: httpx.AsyncClient, method: str, path: str, **kwargs: Any
    ) -> httpx.Response | None:
        """The response, or None when none came (a violation, recorded); 5xx other than
        503, and a 503 without Retry-After, are recorded as violations too."""
        route = f"{method} {_route(path)}"
        started = time.monotonic()
        try:
            response = await http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            self.counts[f"{route} timeout"] += 1
            self.violations.append(f"{method} {path}: no answer in {REQUEST_TIMEOUT_S:g} s")
            return None
        except httpx.TransportError as exc:
            self.counts[f"{route} {type(exc).__name__}"] += 1
            self.violations.append(f"{method} {path}: {type(exc).__name__}: {exc}")
            return None
        elapsed = time.monotonic() - started
        self.counts[f"{route} {response.status_code}"] += 1
        if response.status_code == 503:
            self.slowest_503_s = max(self.slowest_503_s, elapsed)
            self.refused_at.append((started, _route(path)))
            if "retry-after" not in response.headers:
                self.violations.append(f"{method} {path}: 503 without Retry-After")
        elif response.status_code >= 500:
            self.violations.append(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response

    def refusal_windows(self, since: float, gap_s: float = 1.0) -> list[str]:
        """When 503s came, as `from-to s (count)` spans relative to since."""
        windows: list[list[float]] = []
        for at, _ in sorted(self.refused_at):
            if windows and at - windows[-1][1] <= gap_s:
                windows[-1][1:] = [at, windows[-1][2] + 1]
            else:
                windows.append([at, at, 1])
        return [f"{a - since:.1f}-{b - since:.1f} s ({n:g})" for a, b, n in windows]


def job_sleep_s(rng: random.Random) -> float:
    """How long a job runs: mostly 0.05-0.3 s, a few 2-6 s."""
    if rng.random() < LONG_JOB_SHARE:
        return round(rng.uniform(2.0, 6.0), 3)
    return round(rng.uniform(0.05, 0.3), 3)


def _route(path: str) -> str:
    """The path with a job id replaced by `{id}`, to count answers by route."""
    parts = path.split("/")
    if len(parts) > 3 and parts[2] == "jobs" and len(parts[3]) == 32:
        parts[3] = "{id}"
    return "/".join(parts)


def retry_pause_s(response: httpx.Response | None, retries: int) -> float:
    retry_after: str = response.headers.get("retry-after", "") if response is not None else ""
    if retry_after.isdigit():
        return min(float(retry_after), RETRY_CAP_S)
    return min(0.05 * 2.0**retries, RETRY_CAP_S)


@dataclass
class Submitter:
    """Submits `record` jobs with all-distinct inputs at a steady rate, alone (POST
    /v1/jobs) or in batches of up to MAX_GROUP (POST /v1/jobs/batch), until at least
    `jobs` are accepted and `keep_going` is cleared; each 503 is retried.

    A tag is `j{index}a{n}`, n counting a batch's tries (a single job's keys): a
    batch that got no 202 may still have been queued, and its tags tell its runs
    apart from those of its retry.
    """

    http: httpx.AsyncClient
    log: str
    rng: random.Random
    answers: ApiAnswers
    jobs: int
    rate_per_s: float
    max_jobs: int
    accepted: dict[str, str] = field(default_factory=dict)  # job id -> tag
    sleep_by_tag: dict[str, float] = field(default_factory=dict)
    refused_tags: set[str] = field(default_factory=set)  # submitted, never accepted

    async def run(self, keep_going: asyncio.Event) -> None:
        """Submit until enough jobs are accepted and keep_going is cleared."""
        slots = asyncio.Semaphore(SUBMIT_CONCURRENCY)
        groups: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        index = 0
        while (index < self.jobs or keep_going.is_set()) and index < self.max_jobs:
            # Half the requests a single job (with an Idempotency-Key), half a batch.
            size = 1 if self.rng.random() < 0.5 else self.rng.randint(2, MAX_GROUP)
            size = min(size, self.max_jobs - index)
            sleeps = [job_sleep_s(self.rng) for _ in range(size)]
            await slots.acquire()
            group = asyncio.create_task(self._submit(index, sleeps))
            groups.add(group)
            group.add_done_callback(groups.discard)
            group.add_done_callback(lambda _: slots.release())
            index += size
            # A steady rate, whatever the API answered: jobs arrive during every fault.
            await asyncio.sleep(max(0.0, started + index / self.rate_per_s - time.monotonic()))
        await asyncio.gather(*groups)

    async def _submit(self, first: int, sleeps: list[float]) -> None:
        """Submit one group until accepted. Alone, a job goes with an Idempotency-Key
        and the same body on each retry, as a careful client sends it: a retry after
        a 503 whose job was queued anyway gets that job. A batch cannot have a key:
        each retry has new tags, which tell the runs of a refused batch that was
        queued anyway from those of its retry."""
        key = 0  # a new key, and tag, only once the API refuses the key for good
        conflicts = 0
        for attempt in range(1000):
            keyed = len(sleeps) == 1
            tags = [f"j{first + i}a{key if keyed else attempt}" for i in range(len(sleeps))]
            items = [
                {"task": "record", "input": {"tag": tag, "log": self.log, "sleep_s": sleep_s}}
                for tag, sleep_s in zip(tags, sleeps, strict=True)
            ]
            self.sleep_by_tag.update(zip(tags, sleeps, strict=True))
            if keyed:
                headers = {"Idempotency-Key": f"j{first}k{key}"}
                response = await self.answers.request(
                    self.http, "POST", "/v1/jobs", json=items[0], headers=headers
                )
            else:
                response = await self.answers.request(
                    self.http, "POST", "/v1/jobs/batch", json={"jobs": items}
                )
            if response is not None and response.status_code == 202:
                body = response.json()
                for job in body["jobs"] if len(items) > 1 else [body]:
                    self.accepted[job["id"]] = job["input"]["tag"]
                return
            if keyed and response is not None and response.status_code == 409:
                # "did not complete; retry": a few times, then the key is dead.
                conflicts += 1
                if conflicts == KEY_CONFLICTS:
                    self.answers.violations.append(
                        f"Idempotency-Key j{first}k{key}: 409 {conflicts} times after a 503, "
                        f"the key can never make its job: {response.text[:200]}"
                    )
                    key, conflicts = key + 1, 0
            elif response is not None and response.status_code < 500:
                raise AssertionError(f"submission refused: {response.status_code} {response.text}")
            self.refused_tags.update(tags)
            await asyncio.sleep(retry_pause_s(response, attempt))
        raise AssertionError(f"jobs from {first} were never accepted")


async def probe(
    http: httpx.AsyncClient,
    submitter: Submitter,
    stop: asyncio.Event,
    redis_restarts: Callable[[], int],
) -> None:
    """Read the readiness, a job, its result and its events while faults happen:
    200 or 503, never a 500 or a hang; and a burst of reads as soon as Redis is back."""
    restarts_seen = 0
    while not stop.is_set():
        if redis_restarts() > restarts_seen:
            restarts_seen = redis_restarts()
            await read_burst(http, submitter)
        await submitter.answers.request(http, "GET", "/readyz")
        if submitter.accepted:
            job_id = next(iter(submitter.accepted))
            job = await submitter.answers.request(http, "GET", f"/v1/jobs/{job_id}")
            if job is not None and job.status_code == 200 and job.json()["status"] == "succeeded":
                # A finished job's events stream sends its final state and ends.
                for path in ("/result", "/events"):
                    await submitter.answers.request(http, "GET", f"/v1/jobs/{job_id}{path}")
        await asyncio.sleep(0.1)


async def read_burst(http: httpx.AsyncClient, submitter: Submitter) -> None:
    """BURST reads at once, just after Redis answers again: each should be a 200.
    They take as many of the API's pooled Redis connections, all left stale by the
    restart: one used without a check fails its request."""
    job_ids = list(submitter.accepted)[:BURST]
    answers = submitter.answers
    responses = await asyncio.gather(
        *(answers.request(http, "GET", f"/v1/jobs/{job_id}") for job_id in job_ids)
    )
    answers.refused_once_redis_back += sum(
        response is not None and response.status_code == 503 for response in responses
    )
