"""The embed task beside its model: F5 the model alone, in this process, and W7 one-text
embed jobs through factq, with its dynamic batching on and off.

F5  all-MiniLM-L6-v2 as the embed task calls it (sentence-transformers on PyTorch's
    CPU build): distinct short texts, one at a time, then in batches of 32.
W7  as many one-text embed jobs, submitted together and followed to their final
    events, on a factq whose worker serves only `embed`; twice, batching on (the
    task's defaults) and off (FACTQ_TASK_BATCHING max_batch_size 1).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

from bench.config import Sizes, log, run_async
from bench.floors import Floors
from bench.load import JSON_HEADERS, client_session, encoded, until_terminal, ws_url
from bench.procs import cpu_seconds, tree_cpu_seconds
from bench.service import factq_service, pid_of
from bench.table import Row, compared, cpu_per, median, micros, millis, per_second, percentile

F5_BATCH = 32
# Texts encoded (F5) or jobs run (W7) before the measures, on inputs of their own.
WARMUP = 32
TARGET_OVER_ONE_AT_A_TIME = 3.0
BATCHING_OFF: Final = {"FACTQ_TASK_BATCHING": json.dumps({"embed": {"max_batch_size": 1}})}
WORDS: Final = [
    *("the", "a", "every", "some", "quiet", "bright", "old", "young", "small", "large"),
    *("red", "blue", "green", "river", "mountain", "city", "garden", "window", "letter"),
    *("teacher", "doctor", "child", "bird", "engine", "market", "station", "bridge"),
    *("forest", "ocean", "cloud", "morning", "evening", "winter", "summer", "story", "song"),
    *("paper", "machine", "question", "answer", "reads", "writes", "finds", "carries"),
    *("opens", "closes", "watches", "builds", "follows", "remembers", "slowly", "quickly"),
    *("softly", "near", "under", "over", "behind", "beside", "across", "through", "with"),
    *("without", "before", "after", "during", "tomorrow", "yesterday", "often", "never"),
]


class Texts:
    """Distinct short sentences, 5 to 12 words, the same on every run; never one twice."""

    def __init__(self, seed: int = 7) -> None:
        self._random = random.Random(seed)
        self._seen: set[str] = set()

    def take(self, count: int) -> list[str]:
        taken: list[str] = []
        while len(taken) < count:
            words = self._random.choices(WORDS, k=self._random.randint(5, 12))
            text = " ".join(words).capitalize() + "."
            if text not in self._seen:
                self._seen.add(text)
                taken.append(text)
        return taken


@dataclass
class ModelFloors(Floors):
    """The suite's floors, with the model's (F5): texts/s one at a time and in batches."""

    embed_texts: int = 0
    embed_threads: int | None = None
    embed_one_rate: float | None = None
    embed_batch_rate: float | None = None


def model_floor(sizes: Sizes, floors: ModelFloors, rows: list[Row], timeout_s: float) -> None:
    """F5: the model in this process, one text at a time, then in batches of 32; the
    median of `reps` runs of each."""
    deadline = time.monotonic() + timeout_s
    # Imported here: the rest of the suite runs without PyTorch in this process.
    import torch

    from factq.tasks.embed import load_model

    started = time.perf_counter()
    model = load_model()
    log(f"F5: the model loaded in {time.perf_counter() - started:.1f} s")
    texts = Texts(seed=5)
    warmup, measured = texts.take(WARMUP), texts.take(sizes.texts)
    _encode_each(model, warmup, deadline)
    _encode_batches(model, warmup, deadline)
    one_rates, batch_rates = [], []
    for _ in range(sizes.reps):
        one_rates.append(len(measured) / _encode_each(model, measured, deadline))
        batch_rates.append(len(measured) / _encode_batches(model, measured, deadline))
    floors.embed_threads = torch.get_num_threads()
    floors.embed_texts = len(measured)
    floors.embed_one_rate = median(one_rates)
    floors.embed_batch_rate = median(batch_rates)


def _encode(model: Any, texts: list[str]) -> None:
    """As the embed task calls the model (factq.tasks.embed.embed), less its output."""
    from factq.tasks.embed import ENCODE_BATCH_SIZE

    model.encode(
        texts,
        batch_size=ENCODE_BATCH_SIZE,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )


def _encode_each(model: Any, texts: list[str], deadline: float) -> float:
    """Seconds to encode the texts one at a time."""
    started = time.perf_counter()
    for text in texts:
        _check(deadline)
        _encode(model, [text])
    return time.perf_counter() - started


def _encode_batches(model: Any, texts: list[str], deadline: float) -> float:
    """Seconds to encode the texts 32 at a time."""
    started = time.perf_counter()
    for start in range(0, len(texts), F5_BATCH):
        _check(deadline)
        _encode(model, texts[start : start + F5_BATCH])
    return time.perf_counter() - started


def _check(deadline: float) -> None:
    # A call of the model cannot be interrupted: the limit is checked between calls.
    if time.monotonic() > deadline:
        raise TimeoutError


def floor_rows(floors: ModelFloors) -> list[Row]:
    """F5's figures, for the table's floors."""

    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f} texts/s"

    model = (
        f"all-MiniLM-L6-v2 in-process, {floors.embed_threads or '?'} PyTorch threads: "
        f"{floors.embed_texts:,} texts of 5-12 words"
    )
    return [
        Row("F5", f"{model}, one at a time", "-", rate(floors.embed_one_rate)),
        Row("F5", f"{model}, in batches of {F5_BATCH}", "-", rate(floors.embed_batch_rate)),
    ]


@dataclass
class EmbedRun:
    """What one W7 run did: its jobs' latencies, how many did not succeed, the client's
    CPU, and factq's: the API's, the worker's own, and its pool's."""

    jobs: int = 0
    seconds: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    failed: int = 0
    client_cpu_s: float = 0.0
    factq_cpu_s: list[float] = field(default_factory=list)
    processes: int = 0  # the worker's pool

    @property
    def rate(self) -> float | None:
        return self.jobs / self.seconds if self.seconds > 0 else None

    def latency(self) -> str:
        p50, p99 = percentile(self.latencies_s, 0.50), percentile(self.latencies_s, 0.99)
        if p50 is None or p99 is None:
            return "-"
        return f"{millis(p50)} / {millis(p99)}"

    def factq_cpu(self) -> str:
        if not self.jobs or not self.factq_cpu_s:
            return "-"
        return " / ".join(micros(cpu_s / self.jobs) for cpu_s in self.factq_cpu_s)


def embed_jobs(sizes: Sizes, floors: ModelFloors, rows: list[Row], timeout_s: float) -> None:
    """W7: one-text embed jobs through factq, batching on, then off."""
    deadline = time.monotonic() + timeout_s
    texts = Texts(seed=11)
    on = _run(texts, sizes.texts, deadline, {})
    rows.extend(
        [
            compared(
                "W7",
                f"{sizes.texts:,} one-text embed jobs in one POST /v1/jobs/batch, a pool of "
                f"{on.processes}, finals on WS /v1/events, batching on: jobs/s "
                "(vs F5 one at a time)",
                on.rate,
                floors.embed_one_rate,
                per_second,
                at_least=TARGET_OVER_ONE_AT_A_TIME,
                client_cpu=cpu_per(on.client_cpu_s, on.jobs),
            ),
            compared(
                "W7",
                f"batching on: jobs/s (vs F5 in batches of {F5_BATCH})",
                on.rate,
                floors.embed_batch_rate,
                per_second,
            ),
            Row(
                "W7", "batching on: job latency, submission -> final event: p50 / p99", on.latency()
            ),
        ]
    )
    off = _run(texts, sizes.texts, deadline, BATCHING_OFF)
    rows.extend(
        [
            compared(
                "W7",
                "batching off (max_batch_size 1): jobs/s (vs F5 one at a time)",
                off.rate,
                floors.embed_one_rate,
                per_second,
                client_cpu=cpu_per(off.client_cpu_s, off.jobs),
            ),
            Row(
                "W7",
                "batching off: job latency, submission -> final event: p50 / p99",
                off.latency(),
            ),
            compared("W7", "jobs/s, batching on (vs batching off)", on.rate, off.rate, per_second),
            Row("W7", "factq CPU per job, batching on: API / worker / its pool", on.factq_cpu()),
            Row("W7", "factq CPU per job, batching off: API / worker / its pool", off.factq_cpu()),
            Row(
                "W7",
                "jobs that did not succeed, batching on / off",
                f"{on.failed} / {off.failed}",
                target="0",
                meets=on.failed == 0 and off.failed == 0,
            ),
        ]
    )


def _run(texts: Texts, count: int, deadline: float, environ: dict[str, str]) -> EmbedRun:
    """One run on a factq of its own: a warm-up batch, then `count` jobs, followed."""
    run = EmbedRun()
    with factq_service(workers=1, worker_tasks="embed", environ=environ) as (service, settings):
        api, worker = pid_of(service, "api"), pid_of(service, "worker-0")
        run.processes = settings.concurrency

        def factq_cpu_s() -> list[float]:
            worker_s = cpu_seconds(worker)
            return [cpu_seconds(api), worker_s, tree_cpu_seconds([worker]) - worker_s]

        async def drive() -> None:
            async with (
                client_session() as http,
                http.ws_connect(f"{ws_url(service.base_url)}/v1/events") as socket,
            ):
                await _follow(http, socket, service.base_url, texts.take(WARMUP), EmbedRun())
                before = factq_cpu_s()
                await _follow(http, socket, service.base_url, texts.take(count), run)
                after = factq_cpu_s()
                run.factq_cpu_s = [a - b for a, b in zip(after, before, strict=True)]

        run_async(drive(), max(deadline - time.monotonic(), 1.0))
    return run


async def _follow(
    http: aiohttp.ClientSession,
    socket: aiohttp.ClientWebSocketResponse,
    base_url: str,
    texts: list[str],
    run: EmbedRun,
) -> None:
    """Submit a job for each text in one batch, and follow them all to their final events."""
    finals: dict[str, dict[str, Any]] = {}

    def on_final(job: dict[str, Any]) -> None:
        run.latencies_s.append(time.perf_counter() - started)

    started_cpu = time.process_time()
    started = time.perf_counter()
    job_ids = await _submit(http, base_url, texts)
    await socket.send_json({"subscribe": job_ids})
    await until_terminal(socket, set(job_ids), finals, on_final)
    run.seconds = time.perf_counter() - started
    run.client_cpu_s = time.process_time() - started_cpu
    run.jobs = len(finals)
    run.failed = sum(job["status"] != "succeeded" for job in finals.values())
    await socket.send_json({"unsubscribe": job_ids})


async def _submit(http: aiohttp.ClientSession, base_url: str, texts: list[str]) -> list[str]:
    """POST /v1/jobs/batch of one embed job for each text; the jobs' ids."""
    body = encoded({"jobs": [{"task": "embed", "input": {"texts": [text]}} for text in texts]})
    async with http.post(f"{base_url}/v1/jobs/batch", data=body, headers=JSON_HEADERS) as response:
        answer = await response.json()
        if response.status != 202:
            raise RuntimeError(f"batch answered {response.status}: {answer}")
    return [job["id"] for job in answer["jobs"]]
