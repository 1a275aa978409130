"""Progress lines of long work, driven by a fake clock (no real time, no timing thresholds).

Transfers: at most one line per 10 s (bytes done, total if known, rate, time left) and one summary.
Waits: a line per status change; while a status lasts, a "still waiting" line 30 s into it, then one per
``still_waiting_interval`` (5 minutes by default).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from requests_mock import Mocker

from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
from airflow_provider_chamelaion.simulator import Simulator
from airflow_provider_chamelaion.triggers.lipsync import LipsyncRequestTrigger
from airflow_provider_chamelaion.utils import progress
from airflow_provider_chamelaion.utils.progress import TransferProgress, WaitReporter
from tests.harness.logs import logged_messages
from tests.harness.mock_api import STORAGE_URL, UPLOAD_URL, _completed, _UploadCapture
from tests.harness.triggers import collect, polls, wait_until

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


def report_at(reporter_times: list[float], statuses: list[str], **kwargs: Any) -> Lines:
    """The lines a reporter created at ``reporter_times[0]`` logs for each (time, status) poll after it."""
    lines = Lines()
    times = iter(reporter_times)
    reporter = WaitReporter("r-1", lines, clock=lambda: next(times), **kwargs)
    for status in statuses:
        reporter.report(status)
    return lines


def test_wait_says_it_is_alive_in_its_first_minute_then_every_5_minutes() -> None:
    # Polls every 30 s: the reporter is made at 0, then one reading per poll.
    polls = [0.0, *range(0, 691, 30)]
    statuses = ["queued"] * 13 + ["running"] * 11  # queued from 0 s, running from 390 s
    lines = report_at(polls, statuses)
    assert lines == [
        "Chamelaion lip-sync request r-1 is queued",  # 0 s
        "Still waiting on Chamelaion lip-sync request r-1: queued for 30.0 s (waiting 30.0 s in all)",
        "Still waiting on Chamelaion lip-sync request r-1: queued for 5 min 30 s (waiting 5 min 30 s in all)",
        "Chamelaion lip-sync request r-1 is running",  # 390 s
        "Still waiting on Chamelaion lip-sync request r-1: running for 30.0 s (waiting 7 min 0 s in all)",
    ]


@pytest.mark.parametrize(
    ("every", "still_waiting_at"),
    [
        (120.0, [30, 150, 270]),  # the first line 30 s in, then every 2 minutes
        (60.0, [30, 90, 150, 210, 270]),
        (20.0, list(range(20, 301, 20))),  # an interval under 30 s: the first line after the interval
        (600.0, [30]),
    ],
)
def test_the_interval_is_configurable(every: float, still_waiting_at: list[int]) -> None:
    polls = [0.0, *range(0, 301, 10)]
    lines = report_at(polls, ["running"] * (len(polls) - 1), every=every)
    assert lines[0] == "Chamelaion lip-sync request r-1 is running"
    assert [line.split(": running for ")[1].split(" (")[0] for line in lines[1:]] == [
        progress.format_duration(seconds) for seconds in still_waiting_at
    ]


def test_polls_further_apart_than_30_s_say_it_at_the_first_poll_after() -> None:
    lines = report_at([0.0, 0, 45, 90, 135], ["queued"] * 4)
    assert lines == [
        "Chamelaion lip-sync request r-1 is queued",
        "Still waiting on Chamelaion lip-sync request r-1: queued for 45.0 s (waiting 45.0 s in all)",
    ]


# -- the helpers in the hook and the trigger -------------------------------------------------------------


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock(4.0)
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=clock))
    return clock


def test_download_reports_progress(
    mock_hook: ChamelaionHook,
    requests_mock: Mocker,
    tmp_path: Path,
    fake_clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = b"x" * (8 * MIB)  # read in 1 MiB chunks, 4 s apart on the fake clock
    requests_mock.get(STORAGE_URL, content=body, headers={"Content-Length": str(len(body))})
    with logged_messages(caplog) as logs:
        mock_hook.download_output(_completed(), tmp_path / "ep42.mp4")
    lines = [line for line in logs if "ep42.mp4" in line]
    assert lines == [
        f"Downloading output of {_completed().id} to {tmp_path}/ep42.mp4: 3.0 MiB of 8.0 MiB (37%), "
        "256.0 KiB/s, about 20.0 s left",
        f"Downloading output of {_completed().id} to {tmp_path}/ep42.mp4: 6.0 MiB of 8.0 MiB (75%), "
        "256.0 KiB/s, about 8.0 s left",
        f"Downloaded output of {_completed().id} to {tmp_path}/ep42.mp4: 8.0 MiB in 36.0 s (227.6 KiB/s)",
    ]


def test_upload_reports_progress(
    mock_hook: ChamelaionHook,
    requests_mock: Mocker,
    tmp_path: Path,
    fake_clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    video, audio = tmp_path / "ep42.mp4", tmp_path / "ep42-ja.wav"
    video.write_bytes(b"v" * (5 * MIB))
    audio.write_bytes(b"a" * MIB)
    requests_mock.post(UPLOAD_URL, json=_UploadCapture())
    with logged_messages(caplog) as logs:
        mock_hook.generate_with_media(video, audio)
    lines = [line for line in logs if "ep42.mp4 and ep42-ja.wav" in line]
    assert lines[-1] == "Uploaded ep42.mp4 and ep42-ja.wav: 6.0 MiB in 28.0 s (219.4 KiB/s)"
    assert lines[:-1] == [
        "Uploading ep42.mp4 and ep42-ja.wav: 3.0 MiB of 6.0 MiB (50%), 256.0 KiB/s, about 12.0 s left",
        "Uploading ep42.mp4 and ep42-ja.wav: 6.0 MiB of 6.0 MiB (100%), 256.0 KiB/s, about 0.0 s left",
    ]


async def test_trigger_says_it_is_still_waiting(
    simulator: Simulator,
    sim_hook: ChamelaionHook,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=FakeClock(250.0)))  # one poll = 250 s
    request_id = sim_hook.generate("https://media.test/v.mp4", "https://media.test/a.wav")
    simulator.state.force_status(request_id, "queued")
    # As the triggerer builds it from the trigger row: the interval is one of the serialized kwargs.
    _, kwargs = LipsyncRequestTrigger(request_id, poll_interval=0.01, still_waiting_interval=600).serialize()
    trigger = LipsyncRequestTrigger(**kwargs)
    with logged_messages(caplog) as logs:
        run = asyncio.ensure_future(collect(trigger))
        await wait_until(lambda: len(polls(simulator, request_id)) >= 6)
        simulator.state.force_status(request_id, "completed")
        await run
    lines = [line for line in logs if request_id in line]
    assert lines[:3] == [
        f"Chamelaion lip-sync request {request_id} is queued",  # 250 s
        f"Still waiting on Chamelaion lip-sync request {request_id}: queued for 4 min 10 s "
        "(waiting 8 min 20 s in all)",  # 500 s: the first poll 30 s or more into the status
        f"Still waiting on Chamelaion lip-sync request {request_id}: queued for 16 min 40 s "
        "(waiting 20 min 50 s in all)",  # 1250 s: 10 minutes after the last line
    ]
    assert all(line.startswith("Still waiting") for line in lines[3:])
