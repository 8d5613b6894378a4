"""The original Flask design's routes: same behaviour, now with limits and a guarded update."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator, Callable

import gmpy2
import httpx
import pytest

from factq.settings import Settings
from tests.conftest import api_client, factq_server
from tests.support.backends import queue_depth

TOKEN = "worker-token-for-tests"


@pytest.fixture
async def guarded(settings_factory):
    settings = settings_factory(worker_token=TOKEN)
    async with api_client(settings) as client:
        yield client


def as_worker(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_queue_answers_the_id_as_plain_text(client: httpx.AsyncClient, settings) -> None:
    response = await client.get("/factorial", params={"no": "150000"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    job_id = response.text
    assert len(job_id) == 32
    assert await queue_depth(settings) == 1
    result = await client.get("/factorial/result", params={"id": job_id})
    assert result.json() == {"input": 150000, "status": "processing", "output": ""}
    v1 = await client.get(f"/v1/jobs/{job_id}")
    assert v1.json()["input"] == {"n": 150000}


@pytest.mark.parametrize(
    "no", ["abc", "-1", "1.5", "", "1e5", "1000001", "99999999999999999999999"]
)
async def test_a_bad_no_is_a_400(client: httpx.AsyncClient, settings: Settings, no: str) -> None:
    response = await client.get("/factorial", params={"no": no})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request"
    assert await queue_depth(settings) == 0


async def test_a_missing_no_is_a_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/factorial")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request"


@pytest.mark.parametrize("job_id", ["0" * 32, "nope"])
async def test_an_unknown_id_is_a_404(client: httpx.AsyncClient, job_id: str) -> None:
    response = await client.get("/factorial/result", params={"id": job_id})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"


async def test_update_is_refused_while_no_worker_token_is_set(client: httpx.AsyncClient) -> None:
    job_id = (await client.get("/factorial", params={"no": "5"})).text
    body = {"id": job_id, "status": "done", "output": "120"}
    response = await client.post("/factorial/update", json=body, headers=as_worker())
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "forbidden"
    state = await client.get("/factorial/result", params={"id": job_id})
    assert state.json()["status"] == "processing"


@pytest.mark.parametrize("headers", [{}, as_worker("wrong"), {"Authorization": TOKEN}])
async def test_update_needs_the_worker_token(guarded: httpx.AsyncClient, headers) -> None:
    job_id = (await guarded.get("/factorial", params={"no": "5"})).text
    body = {"id": job_id, "status": "done", "output": "120"}
    response = await guarded.post("/factorial/update", json=body, headers=headers)
    assert response.status_code == 403
    assert (await guarded.get(f"/v1/jobs/{job_id}")).json()["status"] == "queued"


async def test_a_worker_updates_a_job_to_done(guarded: httpx.AsyncClient) -> None:
    job_id = (await guarded.get("/factorial", params={"no": "30"})).text
    processing = {"id": job_id, "status": "processing"}
    assert (
        await guarded.post("/factorial/update", json=processing, headers=as_worker())
    ).json() == {
        "input": 30,
        "status": "processing",
        "output": "",
    }
    value = gmpy2.fac(30).digits()
    done = {"id": job_id, "status": "done", "output": value}
    response = await guarded.post("/factorial/update", json=done, headers=as_worker())
    assert response.status_code == 200
    assert response.json()["status"] == "done"
    result = await guarded.get("/factorial/result", params={"id": job_id})
    assert result.json() == {"input": 30, "status": "done", "output": value}
    hexadecimal = await guarded.get(f"/v1/jobs/{job_id}/result", params={"format": "hex"})
    assert hexadecimal.text == gmpy2.fac(30).digits(16)
    job = (await guarded.get(f"/v1/jobs/{job_id}")).json()
    assert job["result"]["digits"] == len(value)
    again = await guarded.post("/factorial/update", json=done, headers=as_worker())
    assert again.status_code == 409
    assert again.json()["error"]["type"] == "already_finished"


async def test_a_worker_marks_a_job_failed(guarded: httpx.AsyncClient) -> None:
    job_id = (await guarded.get("/factorial", params={"no": "7"})).text
    body = {"id": job_id, "status": "failed", "output": "out of memory"}
    assert (
        await guarded.post("/factorial/update", json=body, headers=as_worker())
    ).status_code == 200
    result = await guarded.get("/factorial/result", params={"id": job_id})
    assert result.json() == {"input": 7, "status": "failed", "output": ""}
    job = (await guarded.get(f"/v1/jobs/{job_id}")).json()
    assert job["error"] == {"type": "task_error", "message": "out of memory"}


@pytest.mark.parametrize(
    "body",
    [
        {"status": "done", "output": "12a"},
        {"status": "done", "output": ""},
        {"status": "finished", "output": "120"},
    ],
)
async def test_a_bad_update_is_a_422(guarded: httpx.AsyncClient, body) -> None:
    job_id = (await guarded.get("/factorial", params={"no": "5"})).text
    response = await guarded.post(
        "/factorial/update", json={"id": job_id, **body}, headers=as_worker()
    )
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_input"
    assert (await guarded.get(f"/v1/jobs/{job_id}")).json()["status"] == "queued"


@pytest.mark.timeout(120)
async def test_an_update_takes_the_output_of_the_largest_n_streamed(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(worker_token=TOKEN)
    value = gmpy2.fac(settings.max_n)
    digits = str(value).encode()
    assert len(digits) > settings.max_body_bytes  # 5,565,709 digits for 1,000,000!
    async with (
        factq_server(settings) as (_, address),
        httpx.AsyncClient(base_url=f"http://{address}", timeout=60) as http,
    ):
        job_id = (await http.get("/factorial", params={"no": str(settings.max_n)})).text
        body = b'{"id": "' + job_id.encode() + b'", "status": "done", "output": "' + digits
        body += b'"}'
        # The API (served in this process) never holds the output whole: the
        # memory this process takes while the update is received and stored
        # stays well below its size.
        tracemalloc.start()
        try:
            response = await http.post(
                "/factorial/update",
                content=_chunks(body),
                headers={**as_worker(), "Content-Type": "application/json"},
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < len(digits) / 2, f"{peak:,} bytes at the peak"
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "done"
        job = (await http.get(f"/v1/jobs/{job_id}")).json()
        assert job["result"]["digits"] == len(digits)
        assert job["result"]["head"] == digits[:32].decode()
        hexadecimal = await http.get(f"/v1/jobs/{job_id}/result", params={"format": "hex"})
        assert hexadecimal.text == value.digits(16)
        decimal = await http.get(f"/v1/jobs/{job_id}/result")
        assert decimal.content == digits
        # One digit more than the largest n can have: refused before it is read.
        over = await http.post(
            "/factorial/update",
            content=b"0" * (len(digits) + 70_000),
            headers={**as_worker(), "Content-Type": "application/json"},
        )
        assert over.status_code == 413


async def _chunks(body: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    """Sent without a length, a piece at a time, as a streaming worker would."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_an_update_body_is_a_flat_json_object(guarded: httpx.AsyncClient) -> None:
    job_id = (await guarded.get("/factorial", params={"no": "5"})).text
    for body, fragment in [
        (b'{"id": "' + job_id.encode() + b'", "status": "done", "output": 120}', "JSON string"),
        (b'{"id": "' + job_id.encode() + b'", "status": "done", "extra": "1"}', "not a field"),
        (b'{"id": "' + job_id.encode() + b'", "status": "done"', "ends before"),
        (b'{"status": "done", "output": "120"}', "id: field required"),
    ]:
        response = await guarded.post(
            "/factorial/update",
            content=body,
            headers={**as_worker(), "Content-Type": "application/json"},
        )
        assert response.status_code == 422, body
        assert fragment in response.json()["error"]["message"], response.text
    assert (await guarded.get(f"/v1/jobs/{job_id}")).json()["status"] == "queued"


async def test_an_update_may_name_its_job_after_the_output(guarded: httpx.AsyncClient) -> None:
    job_id = (await guarded.get("/factorial", params={"no": "5"})).text
    body = b'{"output": "120", "status": "done", "id": "' + job_id.encode() + b'"}'
    response = await guarded.post(
        "/factorial/update",
        content=body,
        headers={**as_worker(), "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert (await guarded.get("/factorial/result", params={"id": job_id})).json()["output"] == "120"
