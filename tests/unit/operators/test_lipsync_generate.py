"""LipsyncGenerateOperator: argument checks, submission, never paying twice, waiting and resuming."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import structlog

from airflow_provider_chamelaion.client.retry import RetryPolicy
from airflow_provider_chamelaion.client.wire import url_for_log
from airflow_provider_chamelaion.exceptions import (
    ChamelaionAuthError,
    ChamelaionConfigError,
    ChamelaionError,
    ChamelaionTransportError,
    LipsyncJobFailedError,
    LipsyncWaitTimeout,
)
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
from airflow_provider_chamelaion.operators.lipsync import LipsyncGenerateOperator
from airflow_provider_chamelaion.simulator import Simulator
from airflow_provider_chamelaion.triggers.lipsync import LipsyncRequestTrigger
from tests.harness.airflow_names import TaskDeferred
from tests.harness.context import TASK_ID, FakeTaskStateStore, FakeTI, make_context
from tests.harness.logs import logged_text
from tests.harness.simulator import idle

VIDEO = "https://media.test/ep42/video.mp4"
AUDIO = "https://media.test/ep42/ja.wav"
#: The reference_id derived for DAG_ID/TASK_ID/RUN_ID with VIDEO and AUDIO (map index -1, no namespace):
#: readable dag and task ids, then 16 hex digits of the SHA-256 of the task instance and input identity.
DERIVED = "airflow-dubbing.generate-6efe3452feddc785"
DERIVED_MAP_INDEX_3 = "airflow-dubbing.generate-ddff6d513a39396d"
STATE_KEY = "chamelaion_submission"
GENERATE = "/generate$"
LIST = "/requests$"


def make_operator(
    retry_policy: RetryPolicy | None = None, *, max_attempts: int | None = None, **kwargs: Any
) -> LipsyncGenerateOperator:
    if "video_file" not in kwargs:
        kwargs.setdefault("video_url", VIDEO)
        kwargs.setdefault("audio_url", AUDIO)
    operator = LipsyncGenerateOperator(task_id=TASK_ID, **kwargs)
    if retry_policy is not None:
        operator.hook = ChamelaionHook(max_attempts=max_attempts, retry_policy=retry_policy)
    return operator


def posts(simulator: Simulator) -> list[Any]:
    return idle(simulator).state.calls_to("POST")


def submit(sim_hook: ChamelaionHook, reference_id: str | None) -> str:
    return sim_hook.generate(VIDEO, AUDIO, reference_id=reference_id)


@pytest.fixture
def media(tmp_path: Path) -> tuple[Path, Path]:
    video = tmp_path / "video.mp4"
    audio = tmp_path / "audio.wav"
    video.write_bytes(b"v" * 5000)
    audio.write_bytes(b"a" * 3000)
    return video, audio


# -- construction ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"video_url": VIDEO, "audio_file": "/tmp/a.wav"}, ["video_url", "audio_file"]),
        ({"video_url": VIDEO, "audio_url": AUDIO, "video_file": "/tmp/v.mp4"}, ["video_file"]),
        ({"video_url": VIDEO}, ["audio_url"]),
        ({"audio_url": AUDIO}, ["video_url"]),
        ({"video_file": "/tmp/v.mp4"}, ["audio_file"]),
        ({}, ["video_url", "audio_url", "video_file", "audio_file"]),
        ({"video_file": "/v", "audio_file": "/a", "reference_id": "r"}, ["reference_id"]),
        (
            {"video_file": "/v", "audio_file": "/a", "disable_active_speaker_detection": True},
            ["disable_active_speaker_detection"],
        ),
        ({"video_url": VIDEO, "audio_url": AUDIO, "reuse_existing_request": True}, ["reference_id"]),
        ({"video_url": VIDEO, "audio_url": AUDIO, "poll_interval": 0}, ["poll_interval"]),
        ({"video_url": VIDEO, "audio_url": AUDIO, "timeout": timedelta(0)}, ["timeout"]),
    ],
    ids=[
        "url-and-file",
        "both-urls-and-a-file",
        "audio-url-missing",
        "video-url-missing",
        "audio-file-missing",
        "neither",
        "reference-id-with-files",
        "speaker-detection-with-files",
        "reuse-without-reference-id",
        "zero-poll-interval",
        "zero-timeout",
    ],
)
def test_argument_errors_at_construction(kwargs: dict[str, Any], names: list[str]) -> None:
    with pytest.raises(ChamelaionConfigError) as info:
        LipsyncGenerateOperator(task_id="bad_task", **kwargs)
    message = str(info.value)
    assert "bad_task" in message
    for name in names:
        assert name in message


def test_valid_arguments_construct(media: tuple[Path, Path]) -> None:
    LipsyncGenerateOperator(task_id="urls", video_url=VIDEO, audio_url=AUDIO, reference_id="{{ ds }}")
    LipsyncGenerateOperator(task_id="files", video_file=str(media[0]), audio_file=media[1])


# -- rendered inputs: rejected in execute, before any HTTP call -------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"video_url": "ftp://media.test/v.mp4"}, "video_url"),
        ({"audio_url": "s3://bucket/a.wav"}, "audio_url"),
        ({"audio_url": "   "}, "audio_url"),
        ({"reference_id": "ep42/ja"}, "reference_id"),
        ({"reference_id": "."}, "reference_id"),
        ({"reference_id": ".."}, "reference_id"),
    ],
    ids=["ftp-video", "s3-audio", "blank-audio", "slash-in-reference-id", "dot", "dot-dot"],
)
def test_bad_rendered_url_inputs_fail_before_any_call(
    simulator: Simulator, retry_policy: RetryPolicy, kwargs: dict[str, Any], field: str
) -> None:
    operator = make_operator(retry_policy, **kwargs)
    with pytest.raises(ChamelaionConfigError, match=field):
        operator.execute(make_context(state_store=FakeTaskStateStore()))
    assert idle(simulator).state.calls == []


def test_missing_file_fails_before_any_call(
    simulator: Simulator, retry_policy: RetryPolicy, media: tuple[Path, Path], tmp_path: Path
) -> None:
    operator = make_operator(retry_policy, video_file=tmp_path / "nope.mp4", audio_file=media[1])
    with pytest.raises(ChamelaionConfigError, match=r"video_file.*nope\.mp4.*does not exist"):
        operator.execute(make_context(state_store=FakeTaskStateStore()))
    assert idle(simulator).state.calls == []


def test_empty_file_fails_before_any_call(
    simulator: Simulator, retry_policy: RetryPolicy, media: tuple[Path, Path], tmp_path: Path
) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    operator = make_operator(retry_policy, video_file=media[0], audio_file=empty)
    with pytest.raises(ChamelaionConfigError, match=r"audio_file.*empty"):
        operator.execute(make_context(state_store=FakeTaskStateStore()))
    assert idle(simulator).state.calls == []


# -- URL mode -------------------------------------------------------------------------------------------


def test_returns_the_id_and_pushes_it_before_waiting(simulator: Simulator, retry_policy: RetryPolicy) -> None:
    order: list[str] = []

    def on_push(key: str, value: Any) -> None:
        order.append(f"xcom:{key}")

    ti = FakeTI(on_push=on_push)
    operator = make_operator(retry_policy, wait_for_completion=True, poll_interval=0.05, timeout=60)
    real_send = operator.hook._send

    def recording_send(method: str, path: str, **kwargs: Any) -> Any:
        order.append(f"{method} {path.split('/')[-1] if '/requests/' in path else path}")
        return real_send(method, path, **kwargs)

    operator.hook._send = recording_send  # type: ignore[method-assign]
    request_id = operator.execute(make_context(ti))
    assert ti.pushed("return_value") == [request_id]
    assert order.index("xcom:return_value") == order.index("POST /v1/lipsync/generate") + 1
    polls = [index for index, entry in enumerate(order) if entry == f"GET {request_id}"]
    assert polls
    assert order.index("xcom:return_value") < min(polls)
    assert order[-1] == "xcom:request"


def test_job_carries_the_user_reference_id(simulator: Simulator, retry_policy: RetryPolicy) -> None:
    operator = make_operator(retry_policy, reference_id="ep42-ja", disable_active_speaker_detection=True)
    ti = FakeTI()
    request_id = operator.execute(make_context(ti))
    job = simulator.state.jobs[request_id]
    assert job.reference_id == "ep42-ja"
    assert job.inputs == {"video": VIDEO, "audio": AUDIO}
    assert ti.pushes == [("return_value", request_id)]


@pytest.mark.parametrize(("map_index", "expected"), [(-1, DERIVED), (3, DERIVED_MAP_INDEX_3)])
def test_derived_reference_id_names_the_task_instance(
    simulator: Simulator, retry_policy: RetryPolicy, map_index: int, expected: str
) -> None:
    request_id = make_operator(retry_policy).execute(make_context(FakeTI(map_index=map_index)))
    assert simulator.state.jobs[request_id].reference_id == expected


# -- never paying twice ---------------------------------------------------------------------------------


def test_retry_with_derived_reference_id_submits_nothing_new(
    simulator: Simulator, retry_policy: RetryPolicy
) -> None:
    first = make_operator(retry_policy).execute(make_context(FakeTI(try_number=1)))
    second_ti = FakeTI(try_number=2)  # a retry: XCom of the first try is gone
    second = make_operator(retry_policy).execute(make_context(second_ti))
    assert second == first
    assert len(simulator.state.jobs) == 1
    assert len(posts(simulator)) == 1
    assert second_ti.pushed("return_value") == [first]


def test_retry_with_derived_reference_id_and_store_submits_nothing_new(
    simulator: Simulator, retry_policy: RetryPolicy
) -> None:
    store = FakeTaskStateStore()
    first = make_operator(retry_policy).execute(make_context(FakeTI(try_number=1), state_store=store))
    second = make_operator(retry_policy).execute(make_context(FakeTI(try_number=2), state_store=store))
    assert second == first
    assert len(simulator.state.jobs) == 1


@contextlib.contextmanager
def warnings_logged(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """The warnings logged in the block: through structlog (Airflow 3's task logger) or the standard
    logging module (Airflow 2's)."""
    messages: list[str] = []
    with structlog.testing.capture_logs() as logs, caplog.at_level(logging.WARNING):
        yield messages
    messages.extend(entry["event"] for entry in logs if entry["log_level"] == "warning")
    messages.extend(record.getMessage() for record in caplog.records if record.levelno == logging.WARNING)


def test_reuse_existing_request_takes_the_newest_and_warns(
    simulator: Simulator,
    sim_hook: ChamelaionHook,
    retry_policy: RetryPolicy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    older = submit(sim_hook, "ep42-ja")
    newer = submit(sim_hook, "ep42-ja")
    submit(sim_hook, "ep43-ja")  # another reference_id: never a candidate
    operator = make_operator(retry_policy, reference_id="ep42-ja", reuse_existing_request=True)
    with warnings_logged(caplog) as warnings:
        request_id = operator.execute(make_context())
    assert request_id == newer != older
    assert len(simulator.state.jobs) == 3
    assert len(posts(simulator)) == 3  # only the three set up here
    assert any("2 requests" in warning and newer in warning for warning in warnings), warnings


def test_reuse_existing_request_single_match_does_not_warn(
    simulator: Simulator,
    sim_hook: ChamelaionHook,
    retry_policy: RetryPolicy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    existing = submit(sim_hook, "ep42-ja")
    operator = make_operator(retry_policy, reference_id="ep42-ja", reuse_existing_request=True)
    with warnings_logged(caplog) as warnings:
        assert operator.execute(make_context()) == existing
    assert not [warning for warning in warnings if "reference_id" in warning], warnings


def test_reuse_existing_request_skips_a_failed_job(
    simulator: Simulator, sim_hook: ChamelaionHook, retry_policy: RetryPolicy
) -> None:
    failed = submit(sim_hook, "ep42-ja")
    simulator.state.force_status(failed, "failed", "no face")
    operator = make_operator(retry_policy, reference_id="ep42-ja", reuse_existing_request=True)
    request_id = operator.execute(make_context())
    assert request_id != failed
    assert len(simulator.state.jobs) == 2
    assert simulator.state.jobs[request_id].reference_id == "ep42-ja"


def test_reuse_existing_request_prefers_a_live_job_over_a_newer_failed_one(
    simulator: Simulator, sim_hook: ChamelaionHook, retry_policy: RetryPolicy
) -> None:
    live = submit(sim_hook, "ep42-ja")
    failed = submit(sim_hook, "ep42-ja")
    simulator.state.force_status(failed, "failed")
    operator = make_operator(retry_policy, reference_id="ep42-ja", reuse_existing_request=True)
    assert operator.execute(make_context()) == live
    assert len(simulator.state.jobs) == 2


def test_user_reference_id_retry_reuses_the_job_in_the_store(
    simulator: Simulator, retry_policy: RetryPolicy
) -> None:
    store = FakeTaskStateStore()
    first = make_operator(retry_policy, reference_id="ep42-ja").execute(
        make_context(FakeTI(), state_store=store)
    )
    assert store.data[STATE_KEY]["request_id"] == first
    second = make_operator(retry_policy, reference_id="ep42-ja").execute(
        make_context(FakeTI(try_number=2), state_store=store)
    )
    assert second == first
    assert len(simulator.state.jobs) == 1
    assert len(posts(simulator)) == 1


def test_user_reference_id_without_store_entry_submits_a_new_job(
    simulator: Simulator, retry_policy: RetryPolicy
) -> None:
    first = make_operator(retry_policy, reference_id="ep42-ja").execute(
        make_context(state_store=FakeTaskStateStore())
    )
    second = make_operator(retry_policy, reference_id="ep42-ja").execute(
        make_context(state_store=FakeTaskStateStore())
    )
    assert second != first
    assert len(simulator.state.jobs) == 2


def test_retry_does_not_reuse_a_failed_job_from_the_store(
    simulator: Simulator, retry_policy: RetryPolicy
) -> None:
    store = FakeTaskStateStore()
    first = make_operator(retry_policy, reference_id="ep42-ja").execute(
        make_context(FakeTI(), state_store=store)
    )
    simulator.state.force_status(first, "failed", "no face")
    second = make_operator(retry_policy, reference_id="ep42-ja").execute(
        make_context(FakeTI(try_number=2), state_store=store)
    )
    assert second != first
    assert len(simulator.state.jobs) == 2
    assert store.data[STATE_KEY]["request_id"] == second


@pytest.mark.parametrize("reference_id", [None, "ep42-ja"], ids=["derived", "user"])
def test_post_answer_lost_finds_the_job_instead_of_posting_again(
    simulator: Simulator, retry_policy: RetryPolicy, reference_id: str | None
) -> None:
    simulator.state.add_fault(kind="drop_after", method="POST", path=GENERATE)
    operator = make_operator(retry_policy, reference_id=reference_id)
    ti = FakeTI()
    request_id = operator.execute(make_context(ti, state_store=FakeTaskStateStore()))
    assert list(simulator.state.jobs) == [request_id]
    assert len(posts(simulator)) == 1
    assert posts(simulator)[0].fault == "drop_after"
    assert ti.pushed("return_value") == [request_id]


@pytest.mark.parametrize(
    ("max_attempts", "lost_before"), [(1, 0), (None, 4)], ids=["only-attempt", "fifth-of-five"]
)
def test_post_answer_lost_on_the_last_attempt_still_finds_the_job(
    simulator: Simulator, retry_policy: RetryPolicy, max_attempts: int | None, lost_before: int
) -> None:
    if lost_before:  # dropped before the server acted: nothing created, so the operator POSTs again
        simulator.state.add_fault(kind="drop", method="POST", path=GENERATE, times=lost_before)
    simulator.state.add_fault(kind="drop_after", method="POST", path=GENERATE)
    operator = make_operator(retry_policy, max_attempts=max_attempts, reference_id="ep42-ja")
    request_id = operator.execute(make_context(state_store=FakeTaskStateStore()))
    assert list(simulator.state.jobs) == [request_id]
    assert len(posts(simulator)) == lost_before + 1


def test_post_lost_and_lookup_failing_raises_then_retry_finds_the_job_user_reference_id(
    simulator: Simulator, retry_policy: RetryPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FakeTaskStateStore()
    operator = make_operator(retry_policy, reference_id="ep42-ja")
    real_generate = operator.hook.submit

    def generate_then_break_lookups(*args: Any, **kwargs: Any) -> str:
        # The ids already carrying the reference_id are listed before the POST; only the reconciling
        # look-up after the lost answer must fail, so the faults go in just before the POST.
        simulator.state.add_fault(kind="drop_after", method="POST", path=GENERATE)
        simulator.state.add_fault(kind="status", status=401, method="GET", path=LIST)
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(operator.hook, "submit", generate_then_break_lookups)
    with pytest.raises(ChamelaionAuthError):
        operator.execute(make_context(FakeTI(), state_store=store))
    assert len(simulator.state.jobs) == 1
    created = next(iter(simulator.state.jobs))

    retry_ti = FakeTI(try_number=2)
    request_id = make_operator(retry_policy, reference_id="ep42-ja").execute(
        make_context(retry_ti, state_store=store)
    )
    assert request_id == created
    assert len(simulator.state.jobs) == 1
    assert len(posts(simulator)) == 1
    assert retry_ti.pushed("return_value") == [created]


def test_post_lost_and_lookup_failing_raises_then_retry_finds_the_job_derived(
    simulator: Simulator, retry_policy: RetryPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    operator = make_operator(retry_policy, max_attempts=2)
    real_generate = operator.hook.submit

    def generate_then_break_lookups(*args: Any, **kwargs: Any) -> str:
        # The derived reference_id is looked up before submitting; only the reconciling lookup after
        # the lost answer must fail, so the fault goes in just before the POST.
        simulator.state.add_fault(kind="drop", method="GET", path=LIST, times=2)
        simulator.state.add_fault(kind="drop_after", method="POST", path=GENERATE)
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(operator.hook, "submit", generate_then_break_lookups)
    with pytest.raises(ChamelaionTransportError):
        operator.execute(make_context(FakeTI()))
    assert len(simulator.state.jobs) == 1
    created = next(iter(simulator.state.jobs))

    request_id = make_operator(retry_policy).execute(make_context(FakeTI(try_number=2)))
    assert request_id == created
    assert len(simulator.state.jobs) == 1
    assert len(posts(simulator)) == 1


# -- upload mode ----------------------------------------------------------------------------------------


def test_upload_mode_uploads_records_and_retry_reuses(
    simulator: Simulator, retry_policy: RetryPolicy, media: tuple[Path, Path]
) -> None:
    video, audio = media
    store = FakeTaskStateStore()
    first_ti = FakeTI()
    first = make_operator(retry_policy, video_file=str(video), audio_file=audio).execute(
        make_context(first_ti, state_store=store)
    )
    assert simulator.state.uploads == [{"video": 5000, "audio": 3000}]
    assert simulator.state.jobs[first].source == "upload"
    assert store.data[STATE_KEY]["request_id"] == first
    assert first_ti.pushed("return_value") == [first]

    second = make_operator(retry_policy, video_file=str(video), audio_file=audio).execute(
        make_context(FakeTI(try_number=2), state_store=store)
    )
    assert second == first
    assert len(simulator.state.uploads) == 1
    assert len(simulator.state.jobs) == 1


def test_upload_mode_object_storage_uri(
    simulator: Simulator, retry_policy: RetryPolicy, media: tuple[Path, Path]
) -> None:
    video, audio = media
    operator = make_operator(retry_policy, video_file=f"file://{video}", audio_file=f"file://{audio}")
    operator.execute(make_context(state_store=FakeTaskStateStore()))
    assert simulator.state.uploads == [{"video": 5000, "audio": 3000}]


# -- waiting --------------------------------------------------------------------------------------------


def test_wait_polls_until_completed_and_pushes_the_request(
    simulator: Simulator, retry_policy: RetryPolicy
) -> None:
    ti = FakeTI()
    operator = make_operator(retry_policy, wait_for_completion=True, poll_interval=0.05, timeout=60)
    request_id = operator.execute(make_context(ti))
    [request] = ti.pushed("request")
    assert request["id"] == request_id
    assert request["status"] == "completed"
    assert request["output_url"].startswith(f"{simulator.origin}/outputs/{request_id}.mp4")
    assert ti.pushed("return_value") == [request_id]


def test_signed_output_url_is_logged_without_its_query_and_kept_whole_in_xcom(
    simulator: Simulator, retry_policy: RetryPolicy, caplog: pytest.LogCaptureFixture
) -> None:
    ti = FakeTI()
    operator = make_operator(retry_policy, wait_for_completion=True, poll_interval=0.05, timeout=60)
    with logged_text(caplog) as logs:
        request_id = operator.execute(make_context(ti))
    [request] = ti.pushed("request")
    signed = request["output_url"]
    signature = signed.split("?", 1)[1]
    assert "sig=" in signature  # the simulator signs its output URLs like the API does
    text = "\n".join(logs)
    assert signature not in text
    assert "sig=" not in text
    assert f"{simulator.origin}/outputs/{request_id}.mp4?<signed query hidden>" in text


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        ("https://viewer:s3cr3t@cdn.test/o.mp4", "https://***@cdn.test/o.mp4"),
        (
            "https://viewer@cdn.test:8443/o.mp4?sig=abc",
            "https://***@cdn.test:8443/o.mp4?<signed query hidden>",
        ),
        ("https://cdn.test/o.mp4?sig=abc", "https://cdn.test/o.mp4?<signed query hidden>"),
        ("https://cdn.test/o.mp4", "https://cdn.test/o.mp4"),
    ],
)
def test_urls_in_log_lines_carry_neither_user_info_nor_signature(url: str, logged: str) -> None:
    assert url_for_log(url) == logged


def test_the_completion_log_line_shows_no_user_info_of_the_output_url(
    simulator: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    origin = urlsplit(simulator.origin)
    simulator.state.config.output_base_url = f"http://viewer:s3cr3t@{origin.netloc}"
    operator = LipsyncGenerateOperator(
        task_id="submit",
        video_url="https://cdn.test/v.mp4",
        audio_url="https://cdn.test/a.wav",
        wait_for_completion=True,
        deferrable=False,
        poll_interval=0.05,
    )
    with logged_text(caplog) as lines:
        operator.execute(make_context(task_id="submit"))

    completed = [line for line in lines if "completed:" in line]
    assert completed, lines
    assert all("s3cr3t" not in line and "viewer" not in line for line in lines)
    assert f"http://***@{origin.netloc}/outputs/" in completed[0]


def test_wait_raises_job_failed_with_message_and_id(simulator: Simulator, retry_policy: RetryPolicy) -> None:
    simulator.state.fail_next()
    ti = FakeTI()
    operator = make_operator(retry_policy, wait_for_completion=True, poll_interval=0.05, timeout=60)
    with pytest.raises(LipsyncJobFailedError) as info:
        operator.execute(make_context(ti))
    [request_id] = ti.pushed("return_value")
    assert simulator.config.failure_message in str(info.value)
    assert request_id in str(info.value)
    assert info.value.request_id == request_id
    assert ti.pushed("request") == []


def test_wait_times_out(simulator: Simulator, sim_hook: ChamelaionHook, retry_policy: RetryPolicy) -> None:
    stuck = submit(sim_hook, DERIVED)
    simulator.state.force_status(stuck, "processing")
    operator = make_operator(retry_policy, wait_for_completion=True, poll_interval=0.05, timeout=0.3)
    with pytest.raises(LipsyncWaitTimeout, match=stuck):
        operator.execute(make_context())
    assert len(simulator.state.jobs) == 1  # the derived reference_id found the stuck job: reused


def test_wait_rides_out_transient_errors(simulator: Simulator, retry_policy: RetryPolicy) -> None:
    simulator.state.add_fault(kind="status", status=503, method="GET", path="/requests/.", times=3)
    operator = make_operator(
        retry_policy, max_attempts=1, wait_for_completion=True, poll_interval=0.05, timeout=60
    )
    request_id = operator.execute(make_context())
    assert simulator.state.jobs[request_id]
    assert not simulator.state.faults


def test_deferrable_defers_after_pushing_the_id(simulator: Simulator, retry_policy: RetryPolicy) -> None:
    ti = FakeTI()
    operator = make_operator(
        retry_policy,
        wait_for_completion=True,
        deferrable=True,
        poll_interval=7,
        timeout=timedelta(hours=2),
        chamelaion_conn_id="chamelaion_default",
    )
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        operator.execute(make_context(ti))
    after = time.time()
    [request_id] = ti.pushed("return_value")
    assert ti.pushed("request") == []
    assert info.value.method_name == "execute_complete"
    assert not info.value.kwargs
    trigger = info.value.trigger
    assert isinstance(trigger, LipsyncRequestTrigger)
    assert trigger.request_id == request_id
    assert trigger.poll_interval == 7
    assert trigger.chamelaion_conn_id == "chamelaion_default"
    assert trigger.end_time is not None
    assert before + 7200 <= trigger.end_time <= after + 7200
    assert idle(simulator).state.calls_to("GET", "/requests/.") == []  # no polling in the worker


@pytest.mark.parametrize(
    ("given", "interval"), [({}, 300.0), ({"still_waiting_interval": timedelta(minutes=2)}, 120.0)]
)
def test_the_trigger_says_still_waiting_at_the_tasks_interval(
    simulator: Simulator, retry_policy: RetryPolicy, given: dict[str, Any], interval: float
) -> None:
    operator = make_operator(retry_policy, wait_for_completion=True, deferrable=True, **given)
    with pytest.raises(TaskDeferred) as info:
        operator.execute(make_context())
    assert info.value.trigger.serialize()[1]["still_waiting_interval"] == interval


def test_deferrable_round_trip_through_the_real_trigger(
    simulator: Simulator, retry_policy: RetryPolicy
) -> None:
    operator = make_operator(retry_policy, wait_for_completion=True, deferrable=True, poll_interval=0.05)
    with pytest.raises(TaskDeferred) as info:
        operator.execute(make_context())
    trigger = info.value.trigger

    async def first_event() -> Any:
        async for fired in trigger.run():
            return fired
        return None

    fired = asyncio.run(asyncio.wait_for(first_event(), 20))
    assert "output_url" not in json.dumps(fired.payload)  # logged and stored by Airflow: no signed URL
    ti = FakeTI()  # the resumed task gets a fresh context
    request_id = operator.resume_execution(info.value.method_name, {"event": fired.payload}, make_context(ti))
    assert request_id == trigger.request_id
    [request] = ti.pushed("request")
    assert request["status"] == "completed"
    assert request["output_url"].startswith(f"{simulator.origin}/outputs/{request_id}.mp4?expires=")


def _event(status: str, request_id: str = "r-8", **fields: Any) -> dict[str, Any]:
    """A trigger event as ``LipsyncRequestTrigger`` yields it."""
    return {
        "status": status,
        "request_id": request_id,
        "job_status": None,
        "error_message": None,
        "message": "",
        **fields,
    }


def test_execute_complete_fetches_the_request_once_and_pushes_it(
    simulator: Simulator, sim_hook: ChamelaionHook, retry_policy: RetryPolicy
) -> None:
    request_id = submit(sim_hook, "ep42-ja")
    simulator.state.force_status(request_id, "completed")
    ti = FakeTI()
    operator = make_operator(retry_policy, wait_for_completion=True, deferrable=True)
    completed = _event("completed", request_id, job_status="completed")
    assert operator.execute_complete(make_context(ti), event=completed) == request_id
    [request] = ti.pushed("request")
    assert (request["id"], request["reference_id"]) == (request_id, "ep42-ja")
    assert request["output_url"].startswith(f"{simulator.origin}/outputs/{request_id}.mp4?expires=")
    assert operator.output_request == request  # what the extra link shows
    assert len(idle(simulator).state.calls_to("GET", f"/requests/{request_id}$")) == 1


@pytest.mark.parametrize(
    ("event", "error", "match"),
    [
        (
            _event("failed", job_status="failed", error_message="No face detected"),
            LipsyncJobFailedError,
            r"r-8 failed: No face detected",
        ),
        (_event("timeout", message="r-8 did not finish"), LipsyncWaitTimeout, "r-8 did not finish"),
        (_event("error", message="Stopped: HTTP 401"), ChamelaionError, "Stopped: HTTP 401"),
        (None, ChamelaionError, "Malformed"),
        ({"status": "finished"}, ChamelaionError, "Malformed"),
        ({"status": "completed"}, ChamelaionError, "Malformed"),
    ],
    ids=["failed", "timeout", "error", "none", "unknown-status", "completed-without-request-id"],
)
def test_execute_complete_other_events_raise_without_a_call(
    simulator: Simulator, event: Any, error: type[Exception], match: str
) -> None:
    ti = FakeTI()
    operator = make_operator(wait_for_completion=True, deferrable=True)
    with pytest.raises(error, match=match):
        operator.execute_complete(make_context(ti), event=event)
    assert ti.pushes == []
    assert idle(simulator).state.calls == []


# -- job identity -----------------------------------------------------------------------------------------


def test_deployments_with_their_own_namespace_never_share_a_job(
    simulator: Simulator, retry_policy: RetryPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Staging and production on one API key, running the same DAG: two jobs, one each."""
    jobs = {}
    for namespace in ("staging", "production"):
        connection = json.loads(simulator.connection_json())
        connection["extra"] = {"reference_namespace": namespace}
        monkeypatch.setenv("AIRFLOW_CONN_CHAMELAION_DEFAULT", json.dumps(connection))
        jobs[namespace] = make_operator(retry_policy).execute(make_context(FakeTI()))
    assert len(simulator.state.jobs) == 2
    assert jobs["staging"] != jobs["production"]
    assert (
        simulator.state.jobs[jobs["staging"]].reference_id
        != simulator.state.jobs[jobs["production"]].reference_id
    )


def test_submission_is_logged_once(
    simulator: Simulator, retry_policy: RetryPolicy, caplog: pytest.LogCaptureFixture
) -> None:
    with logged_text(caplog) as logs:
        request_id = make_operator(retry_policy).execute(make_context())
    lines = [line for line in logs if request_id in line]
    assert len(lines) == 1, lines
    assert "Submitted" in lines[0]


def test_deferrable_rerun_of_a_finished_job_does_not_defer(
    simulator: Simulator, retry_policy: RetryPolicy
) -> None:
    """The job of this task instance completed already (e.g. the task is cleared): no trigger for it."""
    store = FakeTaskStateStore()
    first = make_operator(retry_policy).execute(make_context(state_store=store))
    simulator.state.force_status(first, "completed")
    ti = FakeTI(try_number=2)
    operator = make_operator(retry_policy, wait_for_completion=True, deferrable=True, poll_interval=7)
    assert operator.execute(make_context(ti, state_store=store)) == first  # returned: no TaskDeferred
    [request] = ti.pushed("request")
    assert request["id"] == first
    assert request["status"] == "completed"
    assert len(simulator.state.jobs) == 1


def test_deferrable_reused_job_still_running_defers(simulator: Simulator, retry_policy: RetryPolicy) -> None:
    store = FakeTaskStateStore()
    first = make_operator(retry_policy).execute(make_context(state_store=store))
    simulator.state.force_status(first, "running")
    operator = make_operator(retry_policy, wait_for_completion=True, deferrable=True, poll_interval=7)
    with pytest.raises(TaskDeferred) as info:
        operator.execute(make_context(FakeTI(try_number=2), state_store=store))
    assert info.value.trigger.request_id == first


def test_reuse_existing_request_newest_is_by_time_not_text(
    simulator: Simulator, sim_hook: ChamelaionHook, retry_policy: RetryPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """11:00:00.250Z is newer than 11:00:00Z, and 12:30+02:00 (10:30Z) older than both."""
    ids = [submit(sim_hook, "ep42-ja") for _ in range(3)]
    created = {
        ids[0]: "2026-11-25T11:00:00.250Z",
        ids[1]: "2026-11-25T12:30:00+02:00",
        ids[2]: "2026-11-25T11:00:00Z",
    }
    real_describe = simulator.state.describe

    def describe(job: Any, origin: str) -> dict[str, object]:
        payload = real_describe(job, origin)
        payload["created_at"] = created.get(job.id, payload["created_at"])
        return payload

    monkeypatch.setattr(simulator.state, "describe", describe)
    operator = make_operator(retry_policy, reference_id="ep42-ja", reuse_existing_request=True)
    assert operator.execute(make_context()) == ids[0]
    assert len(simulator.state.jobs) == 3


def test_a_retry_handed_the_failed_trys_event_starts_over_and_submits_again(
    simulator: Simulator, retry_policy: RetryPolicy
) -> None:
    """Airflow 3.0 retries a failed deferred try by calling ``execute_complete`` with that try's event.
    The event's try number is not the retry's: it starts over, as on every other line."""
    simulator.state.fail_next(1)
    first = make_operator(retry_policy, wait_for_completion=True, deferrable=True, poll_interval=0.05)
    with pytest.raises(TaskDeferred) as info:
        first.execute(make_context(FakeTI(try_number=1)))
    trigger = info.value.trigger

    async def first_event() -> Any:
        async for fired in trigger.run():
            return fired.payload
        return None

    failed = asyncio.run(asyncio.wait_for(first_event(), 20))
    assert (failed["status"], failed["try_number"]) == ("failed", 1)
    with pytest.raises(LipsyncJobFailedError):
        first.execute_complete(make_context(FakeTI(try_number=1)), failed)  # try 1 fails on its event

    retry = make_operator(retry_policy, wait_for_completion=True, deferrable=True, poll_interval=0.05)
    with pytest.raises(TaskDeferred) as again:
        retry.execute_complete(make_context(FakeTI(try_number=2)), failed)

    assert again.value.trigger.serialize()[1]["try_number"] == 2
    assert len(posts(simulator)) == 2, "the failed job's item was submitted again"


@pytest.mark.parametrize("hook_params", [{"retry_policy": None}, {"api_key": "x"}])
def test_hook_params_the_triggerer_could_not_be_handed_fail_the_dag_at_parse(hook_params: Any) -> None:
    with pytest.raises(ChamelaionConfigError, match=r"generate: hook_params .* cannot be used"):
        make_operator(hook_params=hook_params)
