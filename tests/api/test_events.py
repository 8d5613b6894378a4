"""Live events over real connections: WebSocket per job, multiplexed, SSE, Prefer: wait."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import websockets

from factq.api import events as api_events
from factq.schema import JobError, JobEvent
from factq.settings import Settings
from factq.state.events import EventLog, Subscription
from factq.state.records import NewJob
from factq.state.store import Store
from factq.submit import new_job_id
from factq.worker.progress import MIN_INTERVAL_S, ProgressReporter
from tests.conftest import live_server
from tests.support.waiting import in_background, until, wait_for_job

Event = dict[str, Any]


async def submit(address: str, task: str, **inputs: Any) -> str:
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        response = await http.post("/v1/jobs", json={"task": task, "input": inputs})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def collect(url: str, *, limit: int | None = None) -> tuple[list[Event], int | None]:
    """Events received on a job's socket until it closes (or `limit` events), and the close code."""
    events: list[Event] = []
    async with asyncio.timeout(30), websockets.connect(url) as socket:
        # Iteration ends quietly on a 1000 close and raises on any other.
        with contextlib.suppress(websockets.ConnectionClosedError):
            async for message in socket:
                events.append(json.loads(message))
                if limit is not None and len(events) == limit:
                    return events, None
    return events, socket.close_code


def seqs(events: list[Event]) -> list[int]:
    return [event["seq"] for event in events]


def statuses(events: list[Event]) -> list[str]:
    return [event["job"]["status"] for event in events]


async def test_after_0_replays_every_change_of_a_large_job_in_order(live: str) -> None:
    job_id = await submit(live, "factorial", n=1_000_000)
    events, code = await collect(f"ws://{live}/v1/jobs/{job_id}/events?after=0")
    assert code == 1000
    assert seqs(events) == list(range(1, len(events) + 1))
    assert statuses(events)[:2] == ["queued", "running"]
    assert statuses(events)[-1] == "succeeded"
    progress = [e["job"]["progress"] for e in events if e["job"]["status"] == "running"][1:]
    assert progress, "the factorial of a large n reports progress"
    assert progress == sorted(progress) and progress[0] > 0 and progress[-1] < 1
    assert all(event["type"] == "job" and event["job"]["id"] == job_id for event in events)
    assert events[-1]["job"]["result"]["digits"] == 5_565_709


async def test_without_after_the_first_event_is_the_current_state(live: str) -> None:
    job_id = await submit(live, "factorial", n=10)
    async with httpx.AsyncClient(base_url=f"http://{live}") as http:
        assert (await wait_for_job(http, job_id))["status"] == "succeeded"
    # A client that connects after the job finished gets the final state and the close.
    events, code = await collect(f"ws://{live}/v1/jobs/{job_id}/events")
    assert statuses(events) == ["succeeded"]
    assert seqs(events) == [3]
    assert code == 1000


async def test_an_unknown_job_closes_with_4404(live: str) -> None:
    events, code = await collect(f"ws://{live}/v1/jobs/{'0' * 32}/events")
    assert events == []
    assert code == 4404


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("/v1/jobs/{id}/events?after=-1", "'-1'"),
        ("/v1/jobs/{id}/events?after=abc", "'abc'"),
        ("/v1/jobs/{id}/events?after=1.5", "'1.5'"),
        ("/v1/jobs/{id}/events?after=", "''"),
        ("/v1/jobs/not-an-id/events", "'not-an-id'"),
        ("/v1/jobs/{id}%2Fx/events", "/x'"),
        ("/v1/jobs/a%2F..%2Fb/events", "'a/../b'"),
    ],
)
async def test_a_bad_socket_parameter_is_an_error_message_and_4400(
    live: str, path: str, named: str
) -> None:
    job_id = await submit(live, "factorial", n=10)
    events, code = await collect(f"ws://{live}{path.format(id=job_id)}")
    assert code == 4400
    assert len(events) == 1
    assert events[0]["type"] == "error"
    assert events[0]["error"]["type"] == "invalid_request"
    assert named in events[0]["error"]["message"]


async def test_a_bad_socket_parameter_still_needs_a_key(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(api_keys="k1")
    async with live_server(settings) as address:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await collect(f"ws://{address}/v1/jobs/x/events?after=abc&token=not-a-key")
    assert refused.value.response.status_code == 401


class Gate:
    """Holds an event-log read until the test has changed the job, so the race really happens."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
        self.reached = asyncio.Event()
        self.release = asyncio.Event()
        self.read = asyncio.Event()
        original = getattr(EventLog, method)

        async def held(log: EventLog, *args: Any, **kwargs: Any) -> Any:
            self.reached.set()
            await self.release.wait()
            result = await original(log, *args, **kwargs)
            self.read.set()
            return result

        monkeypatch.setattr(EventLog, method, held)


class Followers:
    """The job's followers that start in this process from now on: the seqs
    their subscriptions are handed live, and whether one has read the job and
    waits on live events."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, job_id: str) -> None:
        self.subscriptions: list[Subscription] = []
        self.seqs: list[int] = []
        self.is_waiting = asyncio.Event()
        start, deliver, wait = Subscription.__init__, Subscription.deliver, Subscription.next

        def started(subscription: Subscription, followed: str, *args: Any, **kwargs: Any) -> None:
            start(subscription, followed, *args, **kwargs)
            if followed == job_id:
                self.subscriptions.append(subscription)

        def delivered(subscription: Subscription, item: Any) -> None:
            deliver(subscription, item)
            if subscription in self.subscriptions and isinstance(item, JobEvent):
                self.seqs.append(item.seq)

        async def waiting(subscription: Subscription, timeout_s: float) -> Any:
            if subscription in self.subscriptions:
                self.is_waiting.set()
            return await wait(subscription, timeout_s)

        monkeypatch.setattr(Subscription, "__init__", started)
        monkeypatch.setattr(Subscription, "deliver", delivered)
        monkeypatch.setattr(Subscription, "next", waiting)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[str]:
    """The API without a worker: the tests move jobs along themselves."""
    async with live_server(settings) as address:
        yield address


async def queued_job(store: Store) -> str:
    job = NewJob(new_job_id(), "factorial", {"n": 5}, "")
    await store.jobs.create([job])
    await store.jobs.confirm([job.job_id])
    return job.job_id


@pytest.mark.parametrize(("query", "method"), [("", "current"), ("?after=0", "read")])
async def test_a_change_between_subscribe_and_first_read_is_neither_lost_nor_repeated(
    server: str, store: Store, monkeypatch: pytest.MonkeyPatch, query: str, method: str
) -> None:
    job_id = await queued_job(store)
    gate = Gate(monkeypatch, method)
    followers = Followers(monkeypatch, job_id)
    url = f"ws://{server}/v1/jobs/{job_id}/events{query}"
    async with in_background(collect(url)) as listening:
        await asyncio.wait_for(gate.reached.wait(), 10)
        # Subscribed, not yet read: this change is published into the subscription.
        await store.runs.mark_running(job_id)
        await until(lambda: followers.seqs == [2])
        gate.release.set()
        # The read sees the change the subscription holds too; the end comes after.
        await asyncio.wait_for(gate.read.wait(), 10)
        await store.runs.mark_succeeded(job_id, {"digits": 3}, {"decimal": b"120", "hex": b"78"})
        events, code = await listening
    expected = [2, 3] if query == "" else [1, 2, 3]
    assert seqs(events) == expected
    assert statuses(events)[-2:] == ["running", "succeeded"]
    assert code == 1000


async def test_a_dropped_connection_resumes_with_after_without_gap_or_repeat(
    server: str, store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = await queued_job(store)
    first, _ = await collect(f"ws://{server}/v1/jobs/{job_id}/events?after=0", limit=1)
    # Changes while the client is away.
    await store.runs.mark_running(job_id)
    report = ProgressReporter(settings.redis_url.get_secret_value(), settings.namespace)
    progress = report.for_job(job_id, min_interval_s=0)
    for fraction in (0.25, 0.5):
        progress(fraction)
    second, _ = await collect(
        f"ws://{server}/v1/jobs/{job_id}/events?after={seqs(first)[-1]}", limit=3
    )
    resumed_at = seqs(second)[-1]
    url = f"ws://{server}/v1/jobs/{job_id}/events?after={resumed_at}"
    followers = Followers(monkeypatch, job_id)
    async with in_background(collect(url)) as third:
        # Caught up, and waiting on live events: the last changes come live.
        await asyncio.wait_for(followers.is_waiting.wait(), 10)
        progress(0.75)
        await store.runs.mark_failed(job_id, JobError(type="task_error", message="bad input"))
        rest, code = await third
    everything = first + second + rest
    assert seqs(everything) == list(range(1, 7))
    assert statuses(everything) == ["queued", "running", "running", "running", "running", "failed"]
    assert [e["job"]["progress"] for e in everything[2:5]] == [0.25, 0.5, 0.75]
    assert code == 1000


async def test_the_multiplexed_socket_carries_the_same_events(live: str) -> None:
    job_id = await submit(live, "factorial", n=1_000_000)
    direct = asyncio.create_task(collect(f"ws://{live}/v1/jobs/{job_id}/events?after=0"))
    multiplexed: list[Event] = []
    async with asyncio.timeout(30), websockets.connect(f"ws://{live}/v1/events") as socket:
        await socket.send(json.dumps({"subscribe": [job_id]}))
        while not multiplexed or multiplexed[-1]["job"]["status"] != "succeeded":
            multiplexed.append(json.loads(await socket.recv()))
        # The socket stays open after a job ends, for more subscriptions.
        await socket.send(json.dumps({"subscribe": [job_id]}))
        again = json.loads(await socket.recv())
    events, _ = await direct
    by_seq = {event["seq"]: event for event in events}
    assert seqs(multiplexed) == sorted(set(seqs(multiplexed)))
    assert all(by_seq[event["seq"]] == event for event in multiplexed)
    assert again == events[-1]


async def test_the_multiplexed_socket_reports_unknown_jobs_and_bad_messages(live: str) -> None:
    unknown = "f" * 32
    async with asyncio.timeout(10), websockets.connect(f"ws://{live}/v1/events") as socket:
        await socket.send(json.dumps({"subscribe": [unknown]}))
        error = json.loads(await socket.recv())
        await socket.send("not json")
        bad = json.loads(await socket.recv())
        await socket.send(json.dumps({"subscribe": "not a list"}))
        worse = json.loads(await socket.recv())
        # Still serving.
        job_id = await submit(live, "factorial", n=5)
        await socket.send(json.dumps({"subscribe": [job_id]}))
        first = json.loads(await socket.recv())
    assert error["type"] == "error" and error["id"] == unknown
    assert error["error"]["type"] == "not_found"
    assert bad["type"] == "error" and bad["error"]["type"] == "invalid_request"
    assert worse["error"]["type"] == "invalid_request"
    assert first["type"] == "job" and first["job"]["id"] == job_id


async def test_a_socket_follows_at_most_max_subscriptions_jobs(
    live: str, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the cap, a subscribe makes none of its subscriptions and says why;
    an unsubscribe frees room, and the socket keeps serving."""
    monkeypatch.setattr(api_events, "MAX_SUBSCRIPTIONS", 3)
    jobs = [NewJob(new_job_id(), "factorial", {"n": 5}, "") for _ in range(5)]
    ids = [job.job_id for job in jobs]
    await store.jobs.create(jobs)  # never published: they stay queued
    async with asyncio.timeout(10), websockets.connect(f"ws://{live}/v1/events") as socket:
        await socket.send(json.dumps({"subscribe": ids[:3]}))
        firsts = [json.loads(await socket.recv()) for _ in range(3)]
        await socket.send(json.dumps({"subscribe": ids[3:]}))
        refused = json.loads(await socket.recv())
        await socket.send(json.dumps({"unsubscribe": ids[:1], "subscribe": ids[3:4]}))
        swapped = json.loads(await socket.recv())
    assert {event["job"]["id"] for event in firsts} == set(ids[:3])
    assert refused["type"] == "error" and "id" not in refused
    assert refused["error"]["type"] == "too_many_subscriptions"
    assert "at most 3" in refused["error"]["message"]
    assert swapped["type"] == "job" and swapped["job"]["id"] == ids[3]


async def test_a_client_message_over_64_kb_closes_the_socket_with_1009(live: str) -> None:
    async with asyncio.timeout(10), websockets.connect(f"ws://{live}/v1/events") as socket:
        await socket.send(json.dumps({"subscribe": ["f" * 32]}))
        assert json.loads(await socket.recv())["error"]["type"] == "not_found"
        await socket.send(json.dumps({"subscribe": ["x" * 70_000]}))
        with pytest.raises(websockets.ConnectionClosedError):
            await socket.recv()
    assert socket.close_code == 1009


async def test_a_job_socket_also_closes_with_1009_on_a_big_message(live: str) -> None:
    job_id = await submit(live, "record", tag="held", log="/dev/null", sleep_s=5)
    async with (
        asyncio.timeout(10),
        websockets.connect(f"ws://{live}/v1/jobs/{job_id}/events") as socket,
    ):
        await socket.recv()
        await socket.send("x" * (64 * 1024 + 1))
        with pytest.raises(websockets.ConnectionClosedError):
            while True:
                await socket.recv()
    assert socket.close_code == 1009


async def sse_events(
    address: str, job_id: str, headers: dict[str, str] | None = None, query: str = ""
) -> list[Event]:
    events: list[Event] = []
    url = f"http://{address}/v1/jobs/{job_id}/events{query}"
    async with (
        httpx.AsyncClient(timeout=30) as http,
        http.stream("GET", url, headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event_id = None
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("data: "):
                events.append(json.loads(line[6:]))
        assert event_id == events[-1]["seq"]
    return events


async def test_sse_streams_the_events_and_ends(live: str) -> None:
    job_id = await submit(live, "factorial", n=300_000)
    events = await sse_events(live, job_id, {"Accept": "application/json"})
    assert statuses(events)[-1] == "succeeded"
    assert seqs(events) == list(range(seqs(events)[0], seqs(events)[-1] + 1))
    resumed = await sse_events(live, job_id, {"Last-Event-ID": "2"})
    assert seqs(resumed) == list(range(3, seqs(events)[-1] + 1))
    replayed = await sse_events(live, job_id, query="?after=0")
    assert seqs(replayed)[0] == 1


async def test_sse_for_an_unknown_job_is_a_404(live: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{live}") as http:
        response = await http.get(f"/v1/jobs/{'a' * 32}/events")
        bad = await http.get(
            f"/v1/jobs/{await submit(live, 'factorial', n=1)}/events",
            headers={"Last-Event-ID": "x"},
        )
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"
    assert bad.status_code == 400


async def test_prefer_wait_answers_with_the_finished_job(live: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{live}", timeout=30) as http:
        body = {"task": "factorial", "input": {"n": 1000}}
        response = await http.post("/v1/jobs", json=body, headers={"Prefer": "wait=5"})
    assert response.status_code == 200
    assert response.json()["status"] == "succeeded"
    assert response.headers["preference-applied"] == "wait=5"
    assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"


async def test_prefer_wait_gives_up_after_the_wait(live: str, execution_log: str) -> None:
    body = {"task": "record", "input": {"tag": "slow", "log": execution_log, "sleep_s": 5}}
    async with httpx.AsyncClient(base_url=f"http://{live}", timeout=30) as http:
        started = asyncio.get_running_loop().time()
        response = await http.post("/v1/jobs", json=body, headers={"Prefer": "wait=0.5"})
        elapsed = asyncio.get_running_loop().time() - started
    assert response.status_code == 202
    assert response.json()["status"] in {"queued", "running"}
    assert 0.5 <= elapsed < 3


async def test_a_wait_that_runs_out_answers_the_job_as_it_is_then(live: str) -> None:
    body = {"task": "steps", "input": {"steps": 1000, "duration_s": 10}}
    async with httpx.AsyncClient(base_url=f"http://{live}", timeout=30) as http:
        response = await http.post("/v1/jobs", json=body, headers={"Prefer": "wait=2"})
        await http.post(f"/v1/jobs/{response.json()['id']}/cancel")
    assert response.status_code == 202
    # Not the job as it was submitted: running, with the progress it reported.
    assert response.json()["status"] == "running"
    assert response.json()["progress"] > 0


async def test_progress_is_throttled_to_about_ten_a_second(live: str) -> None:
    job_id = await submit(live, "steps", steps=1000, duration_s=1.0)
    events, _ = await collect(f"ws://{live}/v1/jobs/{job_id}/events?after=0")
    progress = [
        e for e in events if e["job"]["status"] == "running" and e["job"]["progress"] is not None
    ]
    # At most one report per MIN_INTERVAL_S of the run, however long the run
    # took on a busy machine (plus the first and the last).
    run_s = events[-1]["job"]["metrics"]["run_s"]
    assert 2 <= len(progress) <= run_s / MIN_INTERVAL_S + 2
    fractions = [e["job"]["progress"] for e in progress]
    assert fractions == sorted(set(fractions))
    assert events[-1]["job"]["progress"] == 1


async def test_resuming_after_the_final_event_ends_at_once(live: str) -> None:
    job_id = await submit(live, "factorial", n=10)
    events, _ = await collect(f"ws://{live}/v1/jobs/{job_id}/events?after=0")
    final = events[-1]["seq"]
    again, code = await collect(f"ws://{live}/v1/jobs/{job_id}/events?after={final}")
    assert again == [] and code == 1000
    url = f"http://{live}/v1/jobs/{job_id}/events"
    async with asyncio.timeout(5), httpx.AsyncClient() as http:
        response = await http.get(url, headers={"Last-Event-ID": str(final)})
    assert response.status_code == 200
    assert "data:" not in response.text


async def test_a_server_shutdown_closes_sockets_cleanly(settings: Settings, store: Store) -> None:
    job_id = await queued_job(store)
    async with live_server(settings) as address:
        socket = await websockets.connect(f"ws://{address}/v1/jobs/{job_id}/events")
        first = json.loads(await socket.recv())
    # The server has stopped: the client was told, with a code that says
    # "come back" (1012 service restart, or 1001 going away), not dropped.
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(socket.recv(), 10)
    assert first["job"]["id"] == job_id
    assert socket.close_code in (1001, 1012)


async def test_a_full_socket_of_jobs_subscribed_at_once_gets_every_event(live: str) -> None:
    """A thousand jobs (the cap) subscribed in one message while they run: each
    one's snapshot and changes all come, and the socket is not closed as slow."""
    async with httpx.AsyncClient(base_url=f"http://{live}") as http:
        jobs = [
            {"task": "factorial", "input": {"n": 20 + i}}
            for i in range(api_events.MAX_SUBSCRIPTIONS)
        ]
        response = await http.post("/v1/jobs/batch", json={"jobs": jobs})
    ids = {job["id"] for job in response.json()["jobs"]}
    finished: set[str] = set()
    async with asyncio.timeout(60), websockets.connect(f"ws://{live}/v1/events") as socket:
        await socket.send(json.dumps({"subscribe": sorted(ids)}))
        while finished != ids:
            event = json.loads(await socket.recv())
            assert event["type"] == "job", event
            if event["job"]["status"] == "succeeded":
                finished.add(event["job"]["id"])
