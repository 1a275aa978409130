"""Progress lines of long work, driven by a fake clock (no real time, no timing thresholds).

Transfers: at most one line per 10 s (bytes done, total if known, rate, time left) and one summary.
Waits: a line per status change, and at most one "still waiting" line per 10 minutes of the same status.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from requests_mock import Mocker

from airflow_provider_chamelaion import progress
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
from airflow_provider_chamelaion.progress import TransferProgress, WaitReporter
from airflow_provider_chamelaion.simulator import Simulator
from airflow_provider_chamelaion.triggers.lipsync import LipsyncRequestTrigger
from tests.helpers.triggers import collect, polls, wait_until
from tests.hooks.mock_api import STORAGE_URL, UPLOAD_URL, _completed, _UploadCapture

MIB = 1 << 20


class FakeClock:
    """Each reading moves time on by ``step`` seconds (the first reading is 0)."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.now = -step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class Lines(list):
    """A logger that keeps each formatted info line."""

    def info(self, message: str, *args: Any) -> None:
        self.append(message % args)


def test_transfer_logs_every_10_s_at_most_then_a_summary() -> None:
    lines = Lines()
    meter = TransferProgress("Downloading", "output of r-1", 1024 * MIB, lines, clock=FakeClock(3.0))
    for _ in range(10):  # 100 MiB every 3 s
        meter.advance(100 * MIB)
    meter.advance(24 * MIB)
    meter.finish()
    assert lines == [
        "Downloading output of r-1: 400.0 MiB of 1.0 GiB (39%), 33.3 MiB/s, about 18.7 s left",  # t = 12 s
        "Downloading output of r-1: 800.0 MiB of 1.0 GiB (78%), 33.3 MiB/s, about 6.7 s left",  # t = 24 s
        "Downloaded output of r-1: 1.0 GiB in 36.0 s (28.4 MiB/s)",
    ]


def test_transfer_of_unknown_size_says_how_much_so_far() -> None:
    lines = Lines()
    meter = TransferProgress("Downloading", "output of r-1", None, lines, clock=FakeClock(11.0))
    meter.advance(512 * MIB)
    meter.finish()
    assert lines == [
        "Downloading output of r-1: 512.0 MiB so far, 46.5 MiB/s",
        "Downloaded output of r-1: 512.0 MiB in 22.0 s (23.3 MiB/s)",
    ]


def test_a_short_transfer_logs_only_its_summary() -> None:
    lines = Lines()
    meter = TransferProgress("Uploading", "v.mp4 and a.wav", 3 * MIB, lines, clock=FakeClock(1.0))
    for _ in range(3):
        meter.advance(MIB)
    meter.finish()
    assert lines == ["Uploaded v.mp4 and a.wav: 3.0 MiB in 4.0 s (768.0 KiB/s)"]


def test_wait_logs_changes_and_still_waiting_at_most_every_10_minutes() -> None:
    lines = Lines()
    times = iter([0, 0, 300, 599, 600, 900, 1000, 1599, 1600])
    reporter = WaitReporter("r-1", lines, clock=lambda: next(times))
    for status in ["queued"] * 5 + ["running"] * 3:
        reporter.report(status)
    assert lines == [
        "Chamelaion lip-sync request r-1 is queued",
        "Still waiting on Chamelaion lip-sync request r-1: queued for 10 min 0 s (waiting 10 min 0 s in all)",
        "Chamelaion lip-sync request r-1 is running",
        "Still waiting on Chamelaion lip-sync request r-1: running for 10 min 0 s (waiting 26 min 40 s in all)",
    ]


# -- the helpers in the hook and the trigger -------------------------------------------------------------


def events_of(logs: list[MutableMapping[str, Any]]) -> list[str]:
    """Info lines as the task log shows them (Airflow's loggers format %-style arguments)."""
    return [entry["event"] for entry in logs if entry["log_level"] == "info"]


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock(4.0)
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=clock))
    return clock


def test_download_reports_progress(
    mock_hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path, fake_clock: FakeClock
) -> None:
    body = b"x" * (8 * MIB)  # read in 1 MiB chunks, 4 s apart on the fake clock
    requests_mock.get(STORAGE_URL, content=body, headers={"Content-Length": str(len(body))})
    with structlog.testing.capture_logs() as logs:
        mock_hook.download_output(_completed(), tmp_path / "ep42.mp4")
    lines = [line for line in events_of(logs) if "ep42.mp4" in line]
    assert lines == [
        f"Downloading output of {_completed().id} to {tmp_path}/ep42.mp4: 3.0 MiB of 8.0 MiB (37%), "
        "256.0 KiB/s, about 20.0 s left",
        f"Downloading output of {_completed().id} to {tmp_path}/ep42.mp4: 6.0 MiB of 8.0 MiB (75%), "
        "256.0 KiB/s, about 8.0 s left",
        f"Downloaded output of {_completed().id} to {tmp_path}/ep42.mp4: 8.0 MiB in 36.0 s (227.6 KiB/s)",
    ]


def test_upload_reports_progress(
    mock_hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path, fake_clock: FakeClock
) -> None:
    video, audio = tmp_path / "ep42.mp4", tmp_path / "ep42-ja.wav"
    video.write_bytes(b"v" * (5 * MIB))
    audio.write_bytes(b"a" * MIB)
    requests_mock.post(UPLOAD_URL, json=_UploadCapture())
    with structlog.testing.capture_logs() as logs:
        mock_hook.generate_with_media(video, audio)
    lines = [line for line in events_of(logs) if "ep42.mp4 and ep42-ja.wav" in line]
    assert lines[-1] == "Uploaded ep42.mp4 and ep42-ja.wav: 6.0 MiB in 28.0 s (219.4 KiB/s)"
    assert lines[:-1] == [
        "Uploading ep42.mp4 and ep42-ja.wav: 3.0 MiB of 6.0 MiB (50%), 256.0 KiB/s, about 12.0 s left",
        "Uploading ep42.mp4 and ep42-ja.wav: 6.0 MiB of 6.0 MiB (100%), 256.0 KiB/s, about 0.0 s left",
    ]


async def test_trigger_says_it_is_still_waiting(
    simulator: Simulator, sim_hook: ChamelaionHook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=FakeClock(250.0)))  # one poll = 250 s
    request_id = sim_hook.generate("https://media.test/v.mp4", "https://media.test/a.wav")
    simulator.state.force_status(request_id, "queued")
    trigger = LipsyncRequestTrigger(request_id, poll_interval=0.01)
    with structlog.testing.capture_logs() as logs:
        run = asyncio.ensure_future(collect(trigger))
        await wait_until(lambda: len(polls(simulator, request_id)) >= 5)
        simulator.state.force_status(request_id, "completed")
        await run
    lines = events_of(logs)
    assert lines[:2] == [
        f"Chamelaion lip-sync request {request_id} is queued",  # 250 s
        f"Still waiting on Chamelaion lip-sync request {request_id}: queued for 12 min 30 s "
        "(waiting 16 min 40 s in all)",  # 1000 s
    ]
    assert all(line.startswith("Still waiting") for line in lines[2:])
