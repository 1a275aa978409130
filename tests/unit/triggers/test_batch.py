"""LipsyncBatchTrigger: cheapest polls, progress logs, small events, restarts, errors and deadlines."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from airflow_provider_chamelaion.batch.manifest import ManifestRow, read_manifest, write_manifest
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig
from airflow_provider_chamelaion.triggers.batch import LipsyncBatchTrigger
from tests.harness.batch import run_trigger
from tests.harness.constants import API_KEY
from tests.harness.triggers import wait_until


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return SimulatorConfig(api_key=API_KEY, phases=(("queued", 0.3), ("running", 0.3)), history_size=2000)


def pending_manifest(simulator: Simulator, path: Path, count: int, prefix: str = "item") -> list[str]:
    jobs = [
        simulator.state.create_job(reference_id=f"{prefix}-{n}", source="urls", inputs={})
        for n in range(count)
    ]
    write_manifest(
        path, [ManifestRow(job.reference_id or "", job.id, "queued", source="submitted") for job in jobs]
    )
    return [job.id for job in jobs]


def calls(simulator: Simulator) -> tuple[int, int]:
    """(listing pages, status GETs) served so far."""
    state = simulator.state
    return len(state.calls_to("GET", r"/requests$")), len(state.calls_to("GET", r"/requests/[^/]+$"))


async def one_cycle(trigger: LipsyncBatchTrigger, rows: list[ManifestRow]) -> int:
    hook = ChamelaionHook(trigger.chamelaion_conn_id)
    async with hook.shared_async_client() as client:
        return await trigger._poll(hook, client, {row.request_id or "": row for row in rows})


def test_a_poll_cycle_of_a_large_batch_reads_listing_pages(simulator: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    pending_manifest(simulator, path, 1000)
    trigger = LipsyncBatchTrigger(str(path))
    rows = read_manifest(path)

    cost = asyncio.run(one_cycle(trigger, rows))

    # 1,000 pending jobs, the newest on an account of 3,000: 10 pages instead of 1,000 GETs (100x fewer).
    assert cost == 10
    assert calls(simulator) == (10, 0)


def test_a_few_jobs_buried_in_history_are_read_one_by_one(simulator: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    history = [simulator.state.find(f"history-{n}") for n in (3, 500, 1200)]
    for job in history:
        assert job is not None
        simulator.state.force_status(job.id, "running")
    write_manifest(path, [ManifestRow(job.reference_id or "", job.id, "running") for job in history if job])
    rows = read_manifest(path)

    cost = asyncio.run(one_cycle(LipsyncBatchTrigger(str(path)), rows))

    # The first page shows none of them; 20 pages are dearer than 3 GETs.
    assert cost == 4
    assert calls(simulator) == (1, 3)


def test_the_batch_ends_in_one_small_event_and_the_manifest_holds_the_results(
    simulator: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "manifest.jsonl"
    ids = pending_manifest(simulator, path, 250)

    # The trigger logs through structlog on Airflow 3.1+ and through the standard logging module before.
    with structlog.testing.capture_logs() as logs, caplog.at_level(logging.INFO):
        event = asyncio.run(run_trigger(LipsyncBatchTrigger(str(path), poll_interval=0.1)))
    messages = [str(entry["event"]) for entry in logs] + [record.getMessage() for record in caplog.records]

    assert event["status"] == "done"
    assert event["counts"] == {"not_submitted": 0, "queued": 0, "running": 0, "completed": 250, "failed": 0}
    assert event["manifest_path"] == str(path)
    # Airflow logs the event whole and stores it in next_kwargs: counts and a path, no signed output URL.
    assert sorted(event) == ["counts", "end_time", "manifest_path", "message", "status", "try_number"]
    rows = read_manifest(path)
    assert [row.request_id for row in rows] == ids
    assert all(row.status == "completed" and row.output_url for row in rows)
    progress = [message for message in messages if message.startswith("Batch of 250")]
    # The first line is the first poll's counts: queued on a quick start, later states where the
    # trigger's start-up (slower on Airflow 2.11 and a loaded machine) outlasts the queued phase.
    assert progress[0] in {f"Batch of 250: 250 {status}" for status in ("queued", "running", "completed")}
    assert progress[-1] == "Batch of 250: 250 completed"
    assert len(progress) == len(set(progress)), "a line per change, not per poll"


def test_a_restarted_triggerer_resumes_the_batch_from_the_serialized_kwargs(
    simulator: Simulator, tmp_path: Path
) -> None:
    path = tmp_path / "manifest.jsonl"
    pending_manifest(simulator, path, 300)
    first = LipsyncBatchTrigger(str(path), poll_interval=0.05, end_time=time.time() + 600)
    classpath, kwargs = first.serialize()

    async def interrupted() -> None:
        task = asyncio.ensure_future(run_trigger(first))
        await wait_until(lambda: calls(simulator)[0] >= 4)  # mid-batch: a cycle or more done
        task.cancel()  # the triggerer process goes away
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(interrupted())
    assert classpath == "airflow_provider_chamelaion.triggers.batch.LipsyncBatchTrigger"
    event = asyncio.run(run_trigger(LipsyncBatchTrigger(**kwargs)))

    assert event["status"] == "done"
    assert event["counts"]["completed"] == 300
    assert event["end_time"] == kwargs["end_time"], "the deadline survives the restart"
    assert {row.status for row in read_manifest(path)} == {"completed"}


def test_a_wave_event_once_enough_slots_are_free(simulator: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    pending_manifest(simulator, path, 4)
    rows = [*read_manifest(path), ManifestRow("later-1"), ManifestRow("later-2")]
    write_manifest(path, rows)

    event = asyncio.run(
        run_trigger(LipsyncBatchTrigger(str(path), poll_interval=0.05, resume_when_in_flight_at_most=3))
    )

    assert event["status"] == "wave"
    assert event["counts"]["not_submitted"] == 2
    assert event["counts"]["queued"] + event["counts"]["running"] <= 3


def test_a_past_deadline_ends_with_timeout_and_saves_what_is_known(
    simulator: Simulator, tmp_path: Path
) -> None:
    path = tmp_path / "manifest.jsonl"
    pending_manifest(simulator, path, 3)

    event = asyncio.run(run_trigger(LipsyncBatchTrigger(str(path), end_time=time.time() - 1)))

    assert event["status"] == "timeout"
    assert "did not finish by its deadline: 3 queued" in event["message"]


def test_a_wrong_key_ends_the_wait_at_once(simulator: Simulator, tmp_path: Path, monkeypatch: Any) -> None:
    path = tmp_path / "manifest.jsonl"
    pending_manifest(simulator, path, 3)
    monkeypatch.setenv(
        "AIRFLOW_CONN_CHAMELAION_DEFAULT", simulator.connection_json().replace(API_KEY, "sk-chmln-WRONG")
    )

    event = asyncio.run(run_trigger(LipsyncBatchTrigger(str(path))))

    assert event["status"] == "error"
    assert "HTTP 401" in event["message"]
    assert API_KEY not in str(event)


def test_an_unreadable_manifest_ends_in_one_error_event(simulator: Simulator, tmp_path: Path) -> None:
    event = asyncio.run(run_trigger(LipsyncBatchTrigger(str(tmp_path / "missing.jsonl"))))

    assert event["status"] == "error"
    assert "does not exist" in event["message"]
