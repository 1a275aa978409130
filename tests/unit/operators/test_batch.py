"""LipsyncBatchGenerateOperator: validation before any call, reconcile, never paying twice, waves, results."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_chamelaion.batch.manifest import read_manifest
from airflow_provider_chamelaion.exceptions import (
    ChamelaionConfigError,
    ChamelaionError,
    LipsyncBatchFailedError,
)
from airflow_provider_chamelaion.operators.batch import (
    LipsyncBatchDownloadOperator,
    LipsyncBatchGenerateOperator,
)
from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig
from tests.harness.batch import items, jobs_per_reference, make_batch, run_batch
from tests.harness.constants import API_KEY
from tests.harness.context import RUN_ID, FakeTI, make_context
from tests.harness.logs import logged_text
from tests.harness.simulator import idle

QUEUED, RUNNING = 0.2, 0.3


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return SimulatorConfig(
        api_key=API_KEY, phases=(("queued", QUEUED), ("running", RUNNING)), output_size=1024
    )


def manifest(tmp_path: Path) -> dict[str, dict[str, Any]]:
    return {row.reference_id: row.to_dict() for row in read_manifest(tmp_path / "manifest.jsonl")}


# -- validation -----------------------------------------------------------------------------------


def test_a_bad_catalogue_fails_whole_naming_every_row_and_calls_nothing(
    simulator: Simulator, tmp_path: Path
) -> None:
    catalogue = items(4)
    catalogue[1]["video_url"] = "ftp://cdn.example.com/x.mp4"
    del catalogue[2]["reference_id"]
    catalogue[3]["reference_id"] = catalogue[0]["reference_id"]
    operator = make_batch(tmp_path, catalogue)

    with pytest.raises(ChamelaionConfigError) as raised:
        operator.execute(make_context())

    message = str(raised.value)
    assert "3 problem(s); nothing was submitted" in message
    assert "row 2: video_url must be an absolute http:// or https:// URL" in message
    assert "row 3: reference_id is missing" in message
    assert "row 4: reference_id 'title-0-fr' is also on row 1" in message
    assert simulator.state.calls == []
    assert not (tmp_path / "manifest.jsonl").exists()


def test_a_jsonl_catalogue_error_names_file_line_numbers(simulator: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "catalogue.jsonl"
    lines = [json.dumps(item) for item in items(2)]
    path.write_text(lines[0] + "\n\n" + "{not json\n" + lines[1] + "\n")

    with pytest.raises(ChamelaionConfigError, match=r"row 3: not valid JSON"):
        make_batch(tmp_path, str(path)).execute(make_context())
    assert simulator.state.calls == []


def test_a_csv_catalogue_is_read_with_its_optional_column(simulator: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "catalogue.csv"
    path.write_text(
        "reference_id,video_url,audio_url,disable_active_speaker_detection,title\n"
        "a-fr,https://cdn.example.com/a.mp4,https://cdn.example.com/a-fr.wav,true,A\n"
        "b-fr,https://cdn.example.com/b.mp4,https://cdn.example.com/b-fr.wav,,B\n"
    )

    run = run_batch(make_batch(tmp_path, str(path)), make_context())

    assert run.error is None, run.error
    assert run.summary is not None
    assert (run.summary["completed"], run.summary["submitted"]) == (2, 2)
    inputs = {job.reference_id: job for job in simulator.state.jobs.values()}
    assert set(inputs) == {"a-fr", "b-fr"}


# -- reconcile and submit -------------------------------------------------------------------------


def test_reconcile_reuses_live_jobs_and_submits_only_failed_and_missing(
    simulator: Simulator, tmp_path: Path
) -> None:
    state = simulator.state
    catalogue = items(4)
    state.create_job(reference_id="title-0-fr", source="urls", inputs={})  # will complete: reuse
    state.fail_next()
    failed = state.create_job(reference_id="title-1-fr", source="urls", inputs={})  # failed: resubmit
    state.force_status(failed.id, "failed", "Lip sync failed: no face was detected in the video")
    running = state.create_job(reference_id="title-2-fr", source="urls", inputs={})  # in flight: reuse
    # title-3-fr has no job: submit

    run = run_batch(make_batch(tmp_path, catalogue), make_context())

    assert run.error is None, run.error
    posted = [call for call in idle(simulator).state.calls_to("POST")]
    assert len(posted) == 2
    assert jobs_per_reference(simulator) == {
        "title-0-fr": 1,
        "title-1-fr": 2,
        "title-2-fr": 1,
        "title-3-fr": 1,
    }
    rows = manifest(tmp_path)
    assert {ref: row["source"] for ref, row in rows.items()} == {
        "title-0-fr": "reused",
        "title-1-fr": "submitted",
        "title-2-fr": "reused",
        "title-3-fr": "submitted",
    }
    assert rows["title-2-fr"]["request_id"] == running.id
    assert {row["status"] for row in rows.values()} == {"completed"}
    assert all(row["output_url"] for row in rows.values())
    assert run.summary == {
        "manifest_path": str(tmp_path / "manifest.jsonl"),
        "owner": {"dag_id": "dubbing", "task_id": "generate", "run_id": RUN_ID, "map_index": -1},
        "total": 4,
        "submitted": 2,
        "reused": 2,
        "duplicates": 0,
        "not_submitted": 0,
        "queued": 0,
        "running": 0,
        "completed": 4,
        "failed": 0,
    }
    assert len(run.triggers) == 1, "one trigger for the whole batch"


def test_trigger_kwargs_and_events_stay_small(simulator: Simulator, tmp_path: Path) -> None:
    run = run_batch(make_batch(tmp_path, items(300)), make_context())

    assert run.error is None, run.error
    assert len(json.dumps(run.triggers)) < 1000
    assert len(json.dumps(run.events)) < 1000
    assert run.events[0]["counts"]["completed"] == 300


def test_lost_post_answers_inside_a_batch_create_exactly_one_job_each(
    simulator: Simulator, tmp_path: Path
) -> None:
    # The server creates the job, then the connection drops before the answer: three times in the batch.
    simulator.state.add_fault(kind="drop_after", path="/generate$", times=3)
    simulator.state.add_fault(kind="status", status=502, path="/generate$", times=2)  # not acted on

    run = run_batch(make_batch(tmp_path, items(20), submit_concurrency=4), make_context())

    assert run.error is None, run.error
    assert jobs_per_reference(simulator) == {f"title-{n}-fr": 1 for n in range(20)}
    rows = manifest(tmp_path)
    assert {row["source"] for row in rows.values()} == {"submitted"}
    assert run.summary is not None
    assert run.summary["completed"] == 20


def test_a_429_storm_honours_retry_after_and_pays_once_per_item(
    make_rate_limited: Any, tmp_path: Path
) -> None:
    simulator = make_rate_limited(post_rate_limit=25)

    run = run_batch(make_batch(tmp_path, items(60), submit_concurrency=8), make_context())

    assert run.error is None, run.error
    refused = [call for call in simulator.state.calls_to("POST") if call.status == 429]
    assert refused, "the storm happened"
    assert jobs_per_reference(simulator) == {f"title-{n}-fr": 1 for n in range(60)}
    assert run.summary is not None
    assert run.summary["completed"] == 60


@pytest.fixture
def make_rate_limited(simulator: Simulator) -> Any:
    def make(**overrides: Any) -> Simulator:
        simulator.reset(
            SimulatorConfig(api_key=API_KEY, phases=(("queued", QUEUED), ("running", RUNNING)), **overrides)
        )
        return simulator

    return make


# -- failures -------------------------------------------------------------------------------------


def test_failed_jobs_fail_the_task_after_all_finished_and_a_retry_resubmits_only_them(
    simulator: Simulator, tmp_path: Path
) -> None:
    simulator.state.fail_next(2)
    ti = FakeTI()
    context = make_context(ti)

    run = run_batch(make_batch(tmp_path, items(10), submit_concurrency=1), context)

    assert isinstance(run.error, LipsyncBatchFailedError)
    message = str(run.error)
    assert message.startswith("2 of 10 lip-sync jobs failed")
    assert "title-0-fr (request " in message
    assert "title-1-fr (request " in message
    assert "no face was detected in the video" in message
    assert str(tmp_path / "manifest.jsonl") in message
    pushed = ti.pushed("return_value")
    assert pushed[-1]["failed"] == 2
    assert pushed[-1]["completed"] == 8
    posts_before = len(idle(simulator).state.calls_to("POST"))

    retry = run_batch(make_batch(tmp_path, items(10)), make_context(FakeTI(try_number=2)))

    assert retry.error is None, retry.error
    assert len(idle(simulator).state.calls_to("POST")) - posts_before == 2
    assert retry.summary is not None
    # Every job is this task instance's own (the first try's 8 and the retry's 2).
    assert (retry.summary["submitted"], retry.summary["reused"], retry.summary["completed"]) == (10, 0, 10)


def test_max_failure_rate_accepts_failures_within_it(simulator: Simulator, tmp_path: Path) -> None:
    simulator.state.fail_next(2)

    run = run_batch(make_batch(tmp_path, items(10), max_failure_rate=0.2), make_context())

    assert run.error is None, run.error
    assert run.summary is not None
    assert (run.summary["failed"], run.summary["completed"]) == (2, 8)


def test_a_clear_of_a_finished_batch_trusts_its_manifest_and_calls_nothing(
    simulator: Simulator, tmp_path: Path
) -> None:
    assert run_batch(make_batch(tmp_path, items(50)), make_context()).error is None
    calls_before = len(idle(simulator).state.calls)

    rerun = run_batch(make_batch(tmp_path, items(50)), make_context(FakeTI(try_number=2)))

    assert rerun.error is None
    assert rerun.triggers == []
    assert idle(simulator).state.calls[calls_before:] == [], "its own manifest says every row completed"


def test_a_new_run_of_a_finished_batch_reuses_every_job_for_a_page_of_calls(
    simulator: Simulator, tmp_path: Path
) -> None:
    first = run_batch(make_batch(tmp_path, items(50)), make_context())
    assert first.error is None
    calls_before = len(idle(simulator).state.calls)
    operator = make_batch(tmp_path, items(50))
    operator.manifest_path = str(tmp_path / "run-2" / "manifest.jsonl")

    rerun = run_batch(operator, make_context(FakeTI(run_id="scheduled__2026-11-26T00:00:00+00:00")))

    assert rerun.error is None
    assert rerun.triggers == []
    assert rerun.summary is not None
    assert (rerun.summary["reused"], rerun.summary["completed"]) == (50, 50)
    new_calls = idle(simulator).state.calls[calls_before:]
    assert [(call.method, call.path) for call in new_calls] == [("GET", "/api/v1/lipsync/requests")]


def test_the_task_log_shows_batch_progress_not_a_line_per_item(
    simulator: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with logged_text(caplog) as lines:
        run = run_batch(make_batch(tmp_path, items(30)), make_context())
        downloader = LipsyncBatchDownloadOperator(
            task_id="download", manifest_path=run.summary, destination=str(tmp_path / "outputs")
        )
        downloader.execute(make_context())

    assert run.error is None
    text = "\n".join(lines)
    assert "Submitted 30 of 30" in text
    assert "Downloaded 30 of 30 (0 failed)" in text
    assert "Submitted Chamelaion lip-sync request" not in text  # per item: DEBUG
    assert "Downloaded output of" not in text


# -- in-flight cap ----------------------------------------------------------------------------------


def test_max_in_flight_submits_in_waves_and_never_exceeds_the_cap(
    simulator: Simulator, tmp_path: Path
) -> None:
    run = run_batch(make_batch(tmp_path, items(12), max_in_flight=4), make_context())

    assert run.error is None, run.error
    assert len(run.triggers) >= 3, "a wave per deferral"
    assert all(event["status"] == "wave" for event in run.events[:-1])
    assert run.events[-1]["status"] == "done"
    jobs = sorted(idle(simulator).state.jobs.values(), key=lambda job: job.created_clock)
    assert len(jobs) == 12
    duration = QUEUED + RUNNING
    for job in jobs:  # jobs in flight (created, not finished) when this one was created: itself included
        in_flight = [j for j in jobs if j.created_clock <= job.created_clock < j.created_clock + duration]
        assert len(in_flight) <= 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"submit_concurrency": 0}, "submit_concurrency"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"max_in_flight": 3, "wait_for_completion": False}, "max_in_flight needs wait_for_completion"),
        ({"max_failure_rate": 1.5}, "max_failure_rate"),
        ({"page_size": 0}, "page_size"),
    ],
)
def test_bad_arguments_fail_when_the_dag_is_parsed(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ChamelaionConfigError, match=message):
        LipsyncBatchGenerateOperator(task_id="b", catalogue=[], manifest_path=str(tmp_path / "m"), **kwargs)


def test_without_waiting_the_summary_lists_what_was_submitted(simulator: Simulator, tmp_path: Path) -> None:
    run = run_batch(make_batch(tmp_path, items(5), wait_for_completion=False), make_context())

    assert run.error is None
    assert run.triggers == []
    assert run.summary is not None
    assert (run.summary["submitted"], run.summary["queued"]) == (5, 5)


def test_an_item_the_api_rejects_is_a_failed_row_named_in_the_error(
    simulator: Simulator, tmp_path: Path
) -> None:
    simulator.state.add_fault(
        kind="status", status=422, body='{"message": "inputs[0].url could not be fetched"}', path="/generate$"
    )

    run = run_batch(make_batch(tmp_path, items(5), submit_concurrency=1), make_context())

    assert isinstance(run.error, LipsyncBatchFailedError)
    assert "1 of 5 lip-sync jobs failed" in str(run.error)
    assert "(rejected): inputs[0].url could not be fetched" in str(run.error)
    rejected = [row for row in manifest(tmp_path).values() if row["status"] == "rejected"]
    assert len(rejected) == 1
    assert rejected[0]["request_id"] is None
    assert len(idle(simulator).state.jobs) == 4


def test_a_refused_key_stops_the_submissions_not_yet_sent(simulator: Simulator, tmp_path: Path) -> None:
    # The key may list but not create (e.g. a read-only key): every POST is refused with 401.
    simulator.state.add_fault(kind="status", status=401, path="/generate$", times=1000)

    run = run_batch(make_batch(tmp_path, items(200), submit_concurrency=4), make_context())

    assert isinstance(run.error, ChamelaionError)
    assert re.match(r"[1-4] of 200 submissions failed, 19[6-9] not sent after that", str(run.error))
    assert "HTTP 401" in str(run.error)
    assert 1 <= len(idle(simulator).state.calls_to("POST")) <= 4, "at most one refusal per submitter"
    assert {row["status"] for row in manifest(tmp_path).values()} == {"not_submitted"}
