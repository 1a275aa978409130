"""The batch's promise under production conditions: one owner per manifest, never paying twice on an
overlapping run, a retry, a stop or Airflow 3.0's retry through ``execute_complete``; nothing paid before
every input is checked. Each test is a condition from the field, run against the simulator."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_chamelaion.batch.manifest import read_manifest
from airflow_provider_chamelaion.exceptions import (
    ChamelaionConfigError,
    LipsyncBatchFailedError,
    LipsyncBatchStopped,
)
from airflow_provider_chamelaion.operators.batch import (
    LipsyncBatchDownloadOperator,
    LipsyncBatchGenerateOperator,
)
from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig
from airflow_provider_chamelaion.triggers.batch import LipsyncBatchTrigger
from tests.harness.airflow_names import TaskDeferred
from tests.harness.batch import BatchRun, items, jobs_per_reference, make_batch, run_batch, run_trigger
from tests.harness.constants import API_KEY
from tests.harness.context import FakeTI, make_context
from tests.harness.logs import logged_text
from tests.harness.simulator import idle

RATE = 40  # POSTs a second the simulated account accepts: 120 items take about three seconds


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return SimulatorConfig(api_key=API_KEY, phases=(("queued", 0.2), ("running", 0.3)), output_size=1024)


@pytest.fixture
def rate_limited(simulator: Simulator) -> Simulator:
    simulator.reset(
        SimulatorConfig(api_key=API_KEY, phases=(("queued", 0.2), ("running", 0.3)), post_rate_limit=RATE)
    )
    return simulator


def batch_at(directory: Path, catalogue: Any, **kwargs: Any) -> LipsyncBatchGenerateOperator:
    directory.mkdir(parents=True, exist_ok=True)
    return make_batch(directory, catalogue, **kwargs)


def in_thread(target: Callable[[], BatchRun]) -> tuple[threading.Thread, list[BatchRun]]:
    result: list[BatchRun] = []
    thread = threading.Thread(target=lambda: result.append(target()))
    thread.start()
    return thread, result


def wait_for(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout  # a safety net, never an assertion on speed
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.01)


def manifest_rows(path: Path) -> dict[str, dict[str, Any]]:
    return {row.reference_id: row.to_dict() for row in read_manifest(path)}


# -- overlapping runs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first_ti", "second_ti"),
    [
        pytest.param(
            {"run_id": "scheduled__2026-12-01"}, {"run_id": "manual__2026-12-01"}, id="same task, two runs"
        ),
        pytest.param({"dag_id": "backfill_a"}, {"dag_id": "backfill_b"}, id="two DAGs, one catalogue"),
    ],
)
def test_a_batch_started_while_another_submits_the_same_items_pays_for_none_twice(
    rate_limited: Simulator, tmp_path: Path, first_ti: dict[str, Any], second_ti: dict[str, Any]
) -> None:
    catalogue = items(120)
    first = batch_at(tmp_path / "first", catalogue, wait_for_completion=False)
    second = batch_at(tmp_path / "second", catalogue, wait_for_completion=False)

    thread, first_run = in_thread(lambda: run_batch(first, make_context(FakeTI(**first_ti))))
    wait_for(lambda: len(rate_limited.state.jobs) >= 20)  # the first is well into its submissions
    second_run = run_batch(second, make_context(FakeTI(**second_ti)))
    thread.join()

    assert first_run[0].error is None, first_run[0].error
    assert second_run.error is None, second_run.error
    assert jobs_per_reference(rate_limited) == {f"title-{n}-fr": 1 for n in range(120)}
    first_rows, second_rows = (
        manifest_rows(tmp_path / "first/manifest.jsonl"),
        manifest_rows(tmp_path / "second/manifest.jsonl"),
    )
    for ref in first_rows:  # both manifests know every item's one job
        assert first_rows[ref]["request_id"] == second_rows[ref]["request_id"]
        assert first_rows[ref]["duplicates"] == second_rows[ref]["duplicates"] == []
    submitted = Counter(rows[ref]["source"] for rows in (first_rows, second_rows) for ref in rows)
    assert submitted == {"submitted": 120, "reused": 120}


def test_two_batches_starting_at_the_same_moment_name_every_item_they_both_paid_for(
    simulator: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    catalogue = items(60)
    one = batch_at(tmp_path / "one", catalogue, submit_concurrency=4)
    two = batch_at(tmp_path / "two", catalogue, submit_concurrency=4)
    start = threading.Barrier(2)

    def run(operator: LipsyncBatchGenerateOperator, dag_id: str) -> BatchRun:
        start.wait()
        return run_batch(operator, make_context(dag_id=dag_id))

    with logged_text(caplog, level=30) as warnings:
        thread, one_run = in_thread(lambda: run(one, "dag_one"))
        two_run = run(two, "dag_two")
        thread.join()

    assert one_run[0].error is None
    assert two_run.error is None
    paid_twice = {ref for ref, count in jobs_per_reference(simulator).items() if count > 1}
    for directory in ("one", "two"):  # while submitting, or later while waiting: each batch names them
        rows = manifest_rows(tmp_path / directory / "manifest.jsonl")
        assert {ref for ref, row in rows.items() if row["duplicates"]} == paid_twice
    text = "\n".join(warnings)
    for ref in paid_twice:
        assert f"{ref!r}" in text, f"{ref} is named in a WARNING"


# -- one owner per manifest -------------------------------------------------------------------------


def test_mapped_chunks_sharing_a_run_level_path_each_get_their_own_manifest(
    simulator: Simulator, tmp_path: Path
) -> None:
    chunks = [items(5, prefix="chunk0"), items(7, prefix="chunk1")]
    path = str(tmp_path / "manual__1" / "manifest.jsonl")  # as `.../{{ run_id }}/manifest.jsonl` renders

    summaries = []
    for map_index, chunk in enumerate(chunks):
        operator = LipsyncBatchGenerateOperator(
            task_id="backfill", catalogue=chunk, manifest_path=path, poll_interval=0.1
        )
        run = run_batch(operator, make_context(map_index=map_index))
        assert run.error is None, run.error
        summaries.append(run.summary)

    assert [summary["manifest_path"] for summary in summaries if summary] == [
        str(tmp_path / "manual__1" / "manifest.map-0.jsonl"),
        str(tmp_path / "manual__1" / "manifest.map-1.jsonl"),
    ]
    assert [(s["total"], s["completed"]) for s in summaries if s] == [(5, 5), (7, 7)]
    second = summaries[1]
    assert second is not None
    assert {row.reference_id.split("-")[0] for row in read_manifest(second["manifest_path"])} == {"chunk1"}


def test_a_manifest_another_task_instance_wrote_is_refused_before_any_request(
    simulator: Simulator, tmp_path: Path
) -> None:
    assert run_batch(make_batch(tmp_path, items(3)), make_context(run_id="scheduled__1")).error is None
    calls_before = len(idle(simulator).state.calls)

    run = run_batch(make_batch(tmp_path, items(3)), make_context(run_id="scheduled__2"))

    assert isinstance(run.error, ChamelaionConfigError)
    message = str(run.error)
    assert "already holds the manifest of task dubbing.generate of run 'scheduled__1'" in message
    assert "{{ run_id }}" in message
    assert "Nothing was submitted" in message
    assert idle(simulator).state.calls[calls_before:] == []


def test_a_retry_keeps_its_own_jobs_and_never_adopts_a_newer_one_made_elsewhere(
    simulator: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = run_batch(make_batch(tmp_path, items(4)), make_context())
    assert first.error is None
    ours = {ref: row["request_id"] for ref, row in manifest_rows(tmp_path / "manifest.jsonl").items()}
    # Someone else submits the same reference_id with other inputs, later.
    simulator.state.create_job(
        reference_id="title-2-fr", source="urls", inputs={"audio": "https://cdn.example.com/OTHER-audio.wav"}
    )
    calls_before = len(idle(simulator).state.calls)

    retry = run_batch(make_batch(tmp_path, items(4)), make_context(FakeTI(try_number=2)))

    assert retry.error is None
    assert {ref: row["request_id"] for ref, row in manifest_rows(tmp_path / "manifest.jsonl").items()} == ours
    assert idle(simulator).state.calls[calls_before:] == [], "completed rows are final and cost no call"


# -- Airflow 3.0's retry through execute_complete ---------------------------------------------------


def test_a_retry_handed_the_failed_trys_wave_event_pays_for_no_item_twice(
    simulator: Simulator, tmp_path: Path
) -> None:
    """The worker died during wave 2, after its POSTs and before the manifest was written; Airflow 3.0
    starts the retry in ``execute_complete`` with the old ``wave`` event."""
    path = tmp_path / "manifest.jsonl"
    operator = make_batch(tmp_path, items(20), max_in_flight=10)
    context = make_context(FakeTI(try_number=1))
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context)  # wave 1: 10 submitted
    wave_event = asyncio.run(run_trigger(deferred.value.trigger))
    assert wave_event["status"] == "wave"
    stale = tmp_path / "stale.jsonl"
    shutil.copy(path, stale)
    with pytest.raises(TaskDeferred):
        operator.execute_complete(context, wave_event)  # wave 2 paid for...
    shutil.copy(stale, path)  # ...but the worker died before its manifest was written

    retry = make_batch(tmp_path, items(20), max_in_flight=10)
    step: Callable[[], Any] = lambda: retry.execute_complete(make_context(FakeTI(try_number=2)), wave_event)  # noqa: E731
    run = run_batch(retry, make_context(FakeTI(try_number=2)), first_step=step)

    assert run.error is None, run.error
    assert jobs_per_reference(simulator) == {f"title-{n}-fr": 1 for n in range(20)}
    assert run.summary is not None
    assert run.summary["completed"] == 20


def test_a_wave_is_not_submitted_after_the_deadline(simulator: Simulator, tmp_path: Path) -> None:
    operator = make_batch(tmp_path, items(6), max_in_flight=2)
    context = make_context()
    with pytest.raises(TaskDeferred):
        operator.execute(context)
    posts = len(idle(simulator).state.calls_to("POST"))
    late_wave = {
        "status": "wave",
        "manifest_path": str(tmp_path / "manifest.jsonl"),
        "counts": {},
        "end_time": time.time() - 1,
        "message": "",
        "try_number": 1,
    }

    with pytest.raises(Exception, match="did not finish by its deadline"):
        operator.execute_complete(context, late_wave)
    assert len(idle(simulator).state.calls_to("POST")) == posts


def test_the_trigger_ends_a_wait_past_its_deadline_with_timeout_not_a_wave(
    simulator: Simulator, tmp_path: Path
) -> None:
    operator = make_batch(tmp_path, items(6), max_in_flight=2)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(make_context())
    _, kwargs = deferred.value.trigger.serialize()
    idle(simulator)
    time.sleep(0.6)  # both jobs of the first wave have finished: slots are free

    event = asyncio.run(run_trigger(LipsyncBatchTrigger(**{**kwargs, "end_time": time.time() - 1})))

    assert event["status"] == "timeout"


def test_a_catalogue_edited_between_waves_changes_nothing_until_the_next_run(
    simulator: Simulator, tmp_path: Path
) -> None:
    catalogue = tmp_path / "catalogue.jsonl"
    catalogue.write_text("".join(json.dumps(item) + "\n" for item in items(6)))
    operator = make_batch(tmp_path, str(catalogue), max_in_flight=2)
    context = make_context()
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context)
    edited = items(6)[2:] + items(1, prefix="added")  # two removed, one added
    edited[0]["audio_url"] = "https://cdn.example.com/changed.wav"
    catalogue.write_text("".join(json.dumps(item) + "\n" for item in edited))

    run = run_batch(
        operator,
        context,
        first_step=lambda: operator.execute_complete(
            context, asyncio.run(run_trigger(deferred.value.trigger))
        ),
    )

    assert run.error is None, run.error
    assert jobs_per_reference(simulator) == {f"title-{n}-fr": 1 for n in range(6)}
    jobs = {job.reference_id: job.inputs for job in simulator.state.jobs.values()}
    assert jobs["title-2-fr"]["audio"] == "https://cdn.example.com/title-2-fr.wav"
    assert len(run.triggers) <= 6, "a wave per deferral, never a loop"


# -- stop means stop ----------------------------------------------------------------------------------


def test_on_kill_stops_new_posts_and_every_job_made_is_in_the_manifest(
    rate_limited: Simulator, tmp_path: Path
) -> None:
    operator = make_batch(tmp_path, items(120), wait_for_completion=False, submit_concurrency=4)
    thread, result = in_thread(lambda: run_batch(operator, make_context()))
    wait_for(lambda: len(rate_limited.state.jobs) >= 20)

    operator.on_kill()
    killed_at = len(rate_limited.state.calls_to("POST"))
    thread.join()

    assert isinstance(result[0].error, LipsyncBatchStopped)
    posts_after = len(idle(rate_limited).state.calls_to("POST")) - killed_at
    assert posts_after <= 4, "only the POSTs already in flight"
    recorded = {row.request_id for row in read_manifest(tmp_path / "manifest.jsonl") if row.request_id}
    assert recorded == set(rate_limited.state.jobs), "every job created is in the manifest"

    retry = run_batch(make_batch(tmp_path, items(120)), make_context(FakeTI(try_number=2)))
    assert retry.error is None, retry.error
    assert jobs_per_reference(rate_limited) == {f"title-{n}-fr": 1 for n in range(120)}


class TaskTimeout(Exception):
    """As Airflow's ``execution_timeout`` raises in the task's main thread (SIGALRM)."""


@pytest.fixture
def alarm() -> Iterator[Callable[[float], object]]:
    def raise_timeout(signum: int, frame: Any) -> None:
        raise TaskTimeout("Timeout, PID: 1")

    previous = signal.signal(signal.SIGALRM, raise_timeout)
    yield lambda seconds: signal.setitimer(signal.ITIMER_REAL, seconds)
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def test_a_timeout_during_submission_stops_it_and_records_every_job(
    rate_limited: Simulator, tmp_path: Path, alarm: Callable[[float], object]
) -> None:
    operator = make_batch(tmp_path, items(200), wait_for_completion=False, submit_concurrency=4)

    alarm(1.5)
    run = run_batch(operator, make_context())
    stopped_at = len(rate_limited.state.calls_to("POST"))

    assert isinstance(run.error, TaskTimeout)
    time.sleep(0.5)
    assert len(idle(rate_limited).state.calls_to("POST")) == stopped_at, "nothing sent after the stop"
    recorded = {row.request_id for row in read_manifest(tmp_path / "manifest.jsonl") if row.request_id}
    assert recorded == set(rate_limited.state.jobs)
    assert 0 < len(recorded) < 200


# -- nothing paid before every input is checked --------------------------------------------------------


def test_a_plan_above_max_new_jobs_pays_for_nothing_and_names_the_counts(
    simulator: Simulator, tmp_path: Path
) -> None:
    for n in range(3):
        simulator.state.create_job(reference_id=f"title-{n}-fr", source="urls", inputs={})

    run = run_batch(make_batch(tmp_path, items(10), max_new_jobs=5), make_context())

    assert isinstance(run.error, ChamelaionConfigError)
    assert "would pay for 7 new job(s), more than max_new_jobs=5 (3 existing job(s) reused)" in str(run.error)
    assert idle(simulator).state.calls_to("POST") == []
    plan = manifest_rows(tmp_path / "manifest.jsonl")
    assert Counter(row["status"] for row in plan.values()) == {"not_submitted": 7, "queued": 3}


def test_plan_only_writes_the_plan_and_submits_nothing(simulator: Simulator, tmp_path: Path) -> None:
    simulator.state.create_job(reference_id="title-0-fr", source="urls", inputs={})

    run = run_batch(make_batch(tmp_path, items(4), plan_only=True), make_context())

    assert run.error is None
    assert run.summary is not None
    assert run.summary["plan"] == {"submit": 3, "reuse": 1}
    assert run.triggers == []
    assert idle(simulator).state.calls_to("POST") == []
    assert len(manifest_rows(tmp_path / "manifest.jsonl")) == 4


@pytest.mark.parametrize(
    ("manifest_path", "message"),
    [
        ("gs://bucket/backfills/{{ run_id }}/manifest.jsonl", "cannot use"),
        ("backfills/{{ run_id }}/manifest.jsonl", "is a relative path"),
    ],
)
def test_a_manifest_path_nothing_can_use_fails_when_the_dag_is_parsed(
    manifest_path: str, message: str, plain_install: None
) -> None:
    with pytest.raises(ChamelaionConfigError, match=message):
        LipsyncBatchGenerateOperator(task_id="backfill", catalogue=[], manifest_path=manifest_path)


def test_the_failure_rate_is_exact_at_the_boundary(simulator: Simulator, tmp_path: Path) -> None:
    simulator.state.fail_next(29)

    run = run_batch(
        make_batch(tmp_path, items(100), max_failure_rate=0.29, submit_concurrency=1), make_context()
    )

    assert run.error is None, run.error  # 29 of 100 is within 0.29 (0.29 * 100 == 28.999999999999996)
    assert run.summary is not None
    assert run.summary["failed"] == 29
    simulator.state.fail_next(30)
    over = run_batch(
        batch_at(tmp_path / "over", items(100, prefix="more"), max_failure_rate=0.29, submit_concurrency=1),
        make_context(run_id="second"),
    )
    assert isinstance(over.error, LipsyncBatchFailedError)


def test_a_listing_page_empty_before_its_total_pays_for_nothing_again(
    simulator: Simulator, tmp_path: Path
) -> None:
    simulator.reset(SimulatorConfig(api_key=API_KEY, phases=(), history_size=100))
    assert run_batch(make_batch(tmp_path, items(300)), make_context(run_id="first")).error is None
    simulator.state.add_fault(kind="empty_page", path=r"/requests$", after=1, times=2)  # page 2, twice
    posts = len(idle(simulator).state.calls_to("POST"))
    operator = make_batch(tmp_path, items(300))
    operator.manifest_path = str(tmp_path / "second" / "manifest.jsonl")

    run = run_batch(operator, make_context(run_id="second"))

    assert run.error is None, run.error
    assert len(idle(simulator).state.calls_to("POST")) == posts
    assert run.summary is not None
    assert run.summary["reused"] == 300


def test_429s_are_logged_once_per_back_off_period_with_their_count(
    rate_limited: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with logged_text(caplog, level=30) as warnings:
        run = run_batch(make_batch(tmp_path, items(150), wait_for_completion=False), make_context())

    assert run.error is None, run.error
    refused = [call for call in idle(rate_limited).state.calls_to("POST") if call.status == 429]
    lines = [line for line in warnings if "429" in line]
    counts = [int(re.search(r"refused (\d+) POST", line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert refused, "the account's limit was reached"
    assert sum(counts) == len(refused), "every 429 is counted, in a line per back-off period"
    assert len(lines) < len(refused)
    assert jobs_per_reference(rate_limited) == {f"title-{n}-fr": 1 for n in range(150)}


def test_the_batch_download_refuses_a_manifest_that_is_no_longer_the_batch_tasks(
    simulator: Simulator, tmp_path: Path
) -> None:
    first = run_batch(make_batch(tmp_path, items(3)), make_context())
    assert first.summary is not None
    summary = {**first.summary, "owner": {**first.summary["owner"], "map_index": 1}}  # another's summary
    downloads_before = len(idle(simulator).state.calls_to("GET", "^/outputs/"))
    download = LipsyncBatchDownloadOperator(
        task_id="download", manifest_path=summary, destination=str(tmp_path / "out")
    )

    with pytest.raises(ChamelaionConfigError, match=r"already holds the manifest of task dubbing\.generate"):
        download.execute(make_context())
    assert len(idle(simulator).state.calls_to("GET", "^/outputs/")) == downloads_before
