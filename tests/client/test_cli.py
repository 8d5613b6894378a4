"""`factq submit | status | watch | cancel` as a user runs them: a subprocess per command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import gmpy2
import pytest

from factq.cli import jobs as cli_jobs
from factq.client import Client, Job, JobStatus
from tests.support.service import Service, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def factq(url: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FACTQ_")}
    env["FACTQ_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "factq", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_submit_wait_output_writes_the_exact_digits(service: Service, tmp_path: Path) -> None:
    done = factq(service.base_url, "submit", "150000", "--wait", "--output", "f.txt", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    written = (tmp_path / "f.txt").read_bytes()
    assert len(written) == 711_273
    assert written == gmpy2.fac(150000).digits().encode()
    assert "succeeded" in done.stderr
    assert done.stdout == ""


def test_submit_prints_the_id_then_status_and_watch_follow_it(service: Service) -> None:
    submitted = factq(service.base_url, "submit", "5")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", job_id), submitted.stdout
    watched = factq(service.base_url, "watch", job_id)
    assert watched.returncode == 0, watched.stderr
    assert "succeeded" in watched.stdout.splitlines()[-1]
    status = factq(service.base_url, "status", job_id, "--json")
    assert status.returncode == 0, status.stderr
    job = json.loads(status.stdout)
    assert (job["id"], job["status"], job["result"]["head"]) == (job_id, "succeeded", "120")
    readable = factq(service.base_url, "status", job_id)
    assert readable.returncode == 0
    assert "succeeded" in readable.stdout and "3 digits: 120" in readable.stdout


def test_submit_wait_prints_the_value(service: Service) -> None:
    decimal = factq(service.base_url, "submit", "25", "--wait")
    assert (decimal.returncode, decimal.stdout) == (0, gmpy2.fac(25).digits() + "\n")
    hexadecimal = factq(service.base_url, "submit", "25", "--hex")
    assert (hexadecimal.returncode, hexadecimal.stdout) == (0, gmpy2.fac(25).digits(16) + "\n")


def test_submit_any_task_with_input_in_the_task_and_input_form(service: Service) -> None:
    ten = '{"n": 10}'
    done = factq(service.base_url, "submit", "--task", "factorial", "--input", ten, "--wait")
    assert (done.returncode, done.stdout) == (0, "3628800\n"), done.stderr
    assert "succeeded" in done.stderr
    # N with the factorial named: the same job.
    named = factq(service.base_url, "submit", "10", "--task", "factorial", "--wait")
    assert (named.returncode, named.stdout) == (0, "3628800\n"), named.stderr
    hexadecimal = factq(service.base_url, "submit", "--input", ten, "--hex")
    assert (hexadecimal.returncode, hexadecimal.stdout) == (0, "375f00\n"), hexadecimal.stderr


def test_submit_another_task_prints_its_value_in_its_default_format(
    service: Service, tmp_path: Path
) -> None:
    steps = '{"steps": 2, "duration_s": 0.1}'
    done = factq(service.base_url, "submit", "--task", "steps", "--input", steps, "--wait")
    # The value as the service sends it ("done", text): a newline ends the line.
    assert (done.returncode, done.stdout) == (0, "done\n"), done.stderr
    assert "succeeded" in done.stderr
    written = factq(
        service.base_url, "submit", "--task", "steps", "--input", steps, "-o", "v.txt", cwd=tmp_path
    )
    assert written.returncode == 0, written.stderr
    assert (tmp_path / "v.txt").read_bytes() == b"done"
    assert "wrote 4 bytes to v.txt" in written.stderr
    assert written.stdout == ""
    submitted = factq(service.base_url, "submit", "--task", "steps", "--input", steps)
    assert submitted.returncode == 0, submitted.stderr
    with Client(service.base_url) as client:
        job = client.wait(submitted.stdout.strip(), timeout_s=30)
    assert (job.task, job.input) == ("steps", {"steps": 2, "duration_s": 0.1})
    failed = factq(
        service.base_url, "submit", "--task", "fail", "--input", '{"message": "boom"}', "--wait"
    )
    assert failed.returncode == 1
    assert "boom" in failed.stderr and failed.stdout == ""


def test_an_unknown_task_or_an_input_it_refuses_is_a_usage_error(service: Service) -> None:
    unknown = factq(service.base_url, "submit", "--task", "nope", "--input", "{}")
    assert unknown.returncode == 2
    assert "unknown task 'nope'" in unknown.stderr
    refused = factq(service.base_url, "submit", "--task", "steps", "--input", '{"steps": 0}')
    assert refused.returncode == 2
    assert "invalid input for task 'steps'" in refused.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give N (the factorial of N) or --input JSON"),
        (("--task", "steps"), "give N (the factorial of N) or --input JSON"),
        (("5", "--task", "steps"), "N is the factorial's input; give task 'steps' its input"),
        (("5", "--input", '{"n": 5}'), "give N or --input, not both"),
        (("--input", '{"n": 5'), "--input is not valid JSON: Expecting"),
        (("--input", "[5]"), "--input must be a JSON object"),
        (("--input", "n=5"), "--input is not valid JSON"),
        (("--task", "steps", "--input", '{"steps": 1}', "--hex"), "--hex is for the factorial"),
        (("--task", "", "--input", "{}"), "--task must name a task"),
    ],
)
def test_submit_arguments_that_do_not_go_together_exit_2(
    args: tuple[str, ...], message: str
) -> None:
    # Nothing listens there: a usage error is found before anything is sent.
    done = factq(f"http://127.0.0.1:{free_port()}", "submit", *args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("factq: ")
    assert message in done.stderr, done.stderr


def test_the_progress_description_names_the_task() -> None:
    def job(task: str, job_input: dict[str, object], **fields: object) -> Job:
        return Job.model_validate(
            {"id": "0" * 32, "task": task, "input": job_input, "status": "running"}
            | {"created_at": "2026-01-01T00:00:00Z", **fields}
        )

    assert cli_jobs._describe(job("factorial", {"n": 20})) == "factorial 20! running"
    texts = job("embed", {"texts": ["a", "b"]}, status="queued")
    assert cli_jobs._describe(texts) == 'embed {"texts": ["a", "b"]} queued'
    long = cli_jobs._describe(job("embed", {"texts": ["x" * 100]}, cancel_requested=True))
    assert long.startswith('embed {"texts": ["xxx') and long.endswith("… cancel requested")


def test_status_of_an_unknown_job_exits_3(service: Service) -> None:
    done = factq(service.base_url, "status", "0" * 32)
    assert done.returncode == 3
    assert "no job" in done.stderr


def test_cancel_of_a_finished_job_fails_with_a_clear_message(service: Service) -> None:
    with Client(service.base_url) as client:
        job = client.submit(input={"n": 10}, wait_s=30)
    assert job.status is JobStatus.SUCCEEDED
    done = factq(service.base_url, "cancel", job.id)
    assert done.returncode == 5
    assert "cannot cancel" in done.stderr and "already" in done.stderr


def test_cancel_of_a_running_job_then_watch_exits_1(service: Service) -> None:
    with Client(service.base_url) as client:
        job = client.submit("steps", {"steps": 100, "duration_s": 30.0})
        cancelled = factq(service.base_url, "cancel", job.id)
        assert cancelled.returncode == 0, cancelled.stderr
        assert job.id in cancelled.stdout
        watched = factq(service.base_url, "watch", job.id)
        assert watched.returncode == 1
        assert "cancelled" in watched.stdout.splitlines()[-1]
        assert client.get(job.id).status is JobStatus.CANCELLED


def test_a_failed_job_exits_1(service: Service) -> None:
    with Client(service.base_url) as client:
        job = client.submit("fail", {"message": "boom"}, wait_s=30)
    assert job.status is JobStatus.FAILED
    done = factq(service.base_url, "watch", job.id)
    assert done.returncode == 1
    assert "boom" in done.stdout


def test_an_input_the_service_refuses_is_a_usage_error(service: Service) -> None:
    done = factq(service.base_url, "submit", "-1")
    assert done.returncode == 2
    assert "greater than or equal to 0" in done.stderr


def test_an_unreachable_service_exits_4() -> None:
    done = factq(f"http://127.0.0.1:{free_port()}", "submit", "5")
    assert done.returncode == 4
    assert "cannot reach" in done.stderr


def test_usage_errors_exit_2() -> None:
    assert factq("http://127.0.0.1:9", "submit", "five").returncode == 2
    assert factq("http://127.0.0.1:9", "status").returncode == 2
    bad_url = factq("http://127.0.0.1:9", "status", "x", "--url", "localhost:8000")
    assert bad_url.returncode == 2
    assert "http(s)://" in bad_url.stderr


def test_help_documents_the_exit_codes() -> None:
    for command in ("submit", "status", "watch", "cancel"):
        done = factq("http://127.0.0.1:9", command, "--help")
        assert done.returncode == 0
        assert "exit codes:" in done.stdout and "3  no such job" in done.stdout
