"""LipsyncRequestTrigger: serialization and every way ``run()`` can end, against the simulator and a
scripted server (both on real loopback sockets)."""

from __future__ import annotations

import asyncio
import importlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from airflow_provider_chamelaion.client import session as shared_session
from airflow_provider_chamelaion.client.retry import RetryPolicy
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
from airflow_provider_chamelaion.simulator import Simulator
from airflow_provider_chamelaion.triggers.lipsync import LipsyncRequestTrigger
from tests.harness.constants import API_KEY, connection_json
from tests.harness.loop_guard import forbid_sync_lookup_on_the_loop
from tests.harness.scripted_server import Reply, ScriptedServer, scripted_server
from tests.harness.simulator import idle
from tests.harness.triggers import collect, only_event, polls, wait_until

CLASS_PATH = "airflow_provider_chamelaion.triggers.lipsync.LipsyncRequestTrigger"
POLL = 0.05


def submit(sim_hook: ChamelaionHook, reference_id: str | None = None) -> str:
    return sim_hook.generate(
        "https://media.test/v.mp4", "https://media.test/a.wav", reference_id=reference_id
    )


@pytest.fixture
def fast_hooks(monkeypatch: pytest.MonkeyPatch, retry_policy: RetryPolicy) -> Callable[..., None]:
    """Make the trigger build its hook with recorded (not slept) retry waits, optionally fewer attempts."""

    def apply(max_attempts: int | None = None) -> None:
        def hook(self: LipsyncRequestTrigger) -> ChamelaionHook:
            return ChamelaionHook(
                self.chamelaion_conn_id, max_attempts=max_attempts, retry_policy=retry_policy
            )

        monkeypatch.setattr(LipsyncRequestTrigger, "_hook", hook)

    return apply


# -- serialization ------------------------------------------------------------------------------------


def test_serialize_is_class_path_and_json_primitives_without_the_key(mock_conn: str) -> None:
    end_time = time.time() + 3600
    trigger = LipsyncRequestTrigger(
        request_id="ep42-ja",
        chamelaion_conn_id="chamelaion_default",
        poll_interval=7,
        end_time=end_time,
        max_consecutive_errors=4,
        still_waiting_interval=120,
        hook_params={"max_attempts": 3, "timeout": [5.0, 30.0]},
        try_number=2,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == CLASS_PATH
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert kwargs == {
        "request_id": "ep42-ja",
        "chamelaion_conn_id": "chamelaion_default",
        "poll_interval": 7.0,
        "end_time": end_time,
        "max_consecutive_errors": 4,
        "still_waiting_interval": 120.0,
        "hook_params": {"max_attempts": 3, "timeout": [5.0, 30.0]},
        "try_number": 2,
    }
    assert API_KEY not in json.dumps(kwargs)
    hook = LipsyncRequestTrigger(**kwargs)._hook()  # the task's hook_params reach the triggerer's hook
    assert (hook.retry_policy.max_attempts, hook.timeout) == (3, (5.0, 30.0))
    assert API_KEY not in repr(trigger.serialize())


@pytest.mark.parametrize("end_time", [None, 1_900_000_000.25])
def test_rebuilt_trigger_serializes_the_same(end_time: float | None) -> None:
    trigger = LipsyncRequestTrigger(
        "abc", "my_conn", poll_interval=0.5, end_time=end_time, still_waiting_interval=45
    )
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))
    assert isinstance(rebuilt, LipsyncRequestTrigger)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert rebuilt.end_time == end_time  # an absolute deadline: a restart does not reset the countdown
    assert rebuilt.still_waiting_interval == 45.0


def test_trigger_rows_written_before_still_waiting_interval_existed_still_load() -> None:
    kwargs: dict[str, Any] = {"request_id": "abc", "chamelaion_conn_id": "c", "poll_interval": 30.0}
    assert LipsyncRequestTrigger(**kwargs).still_waiting_interval == 300.0


# -- terminal outcomes ----------------------------------------------------------------------------------


async def test_completed_job_yields_one_completed_event_without_the_signed_url(
    simulator: Simulator, sim_hook: ChamelaionHook
) -> None:
    request_id = submit(sim_hook, "ep1")
    event = only_event(await collect(LipsyncRequestTrigger(request_id, poll_interval=POLL)))
    # Airflow logs the whole event and stores it in next_kwargs: what the worker needs, no signed URL.
    assert event == {
        "status": "completed",
        "request_id": request_id,
        "job_status": "completed",
        "error_message": None,
        "message": f"Chamelaion lip-sync request {request_id} completed",
        "try_number": None,
    }


async def test_waiting_by_reference_id_reports_the_jobs_id(
    simulator: Simulator, sim_hook: ChamelaionHook
) -> None:
    request_id = submit(sim_hook, "ep42-ja-2026-11-25")
    event = only_event(await collect(LipsyncRequestTrigger("ep42-ja-2026-11-25", poll_interval=POLL)))
    assert (event["status"], event["request_id"]) == ("completed", request_id)


async def test_failed_job_yields_failed_event_with_api_message_and_id(
    simulator: Simulator, sim_hook: ChamelaionHook
) -> None:
    simulator.state.fail_next()
    request_id = submit(sim_hook)
    event = only_event(await collect(LipsyncRequestTrigger(request_id, poll_interval=POLL)))
    assert event["status"] == "failed"
    assert event["job_status"] == "failed"
    assert event["error_message"] == simulator.config.failure_message
    assert simulator.config.failure_message in event["message"]
    assert request_id in event["message"]


async def test_deadline_in_the_past_yields_timeout_with_last_request(
    simulator: Simulator, sim_hook: ChamelaionHook
) -> None:
    request_id = submit(sim_hook)
    simulator.state.force_status(request_id, "queued")
    trigger = LipsyncRequestTrigger(request_id, poll_interval=POLL, end_time=time.time() - 5)
    event = only_event(await collect(trigger))
    assert event["status"] == "timeout"
    assert event["request_id"] == request_id
    assert event["job_status"] == "queued"
    assert request_id in event["message"]
    assert len(polls(idle(simulator), request_id)) == 1  # looked once, then stopped


async def test_deadline_soon_yields_timeout_after_polling(
    simulator: Simulator, sim_hook: ChamelaionHook
) -> None:
    request_id = submit(sim_hook)
    simulator.state.force_status(request_id, "processing")
    trigger = LipsyncRequestTrigger(request_id, poll_interval=POLL, end_time=time.time() + 0.3)
    event = only_event(await collect(trigger))
    assert event["status"] == "timeout"
    assert event["job_status"] == "processing"
    assert "'processing'" in event["message"]


# -- permanent errors -----------------------------------------------------------------------------------


async def test_wrong_api_key_ends_with_error_after_one_call(
    simulator: Simulator, sim_hook: ChamelaionHook, monkeypatch: pytest.MonkeyPatch
) -> None:
    request_id = submit(sim_hook)
    monkeypatch.setenv("AIRFLOW_CONN_CHAMELAION_DEFAULT", connection_json(simulator.base_url, "wrong-key"))
    event = only_event(await collect(LipsyncRequestTrigger(request_id, poll_interval=POLL)))
    assert event["status"] == "error"
    assert "401" in event["message"]
    assert request_id in event["message"]
    assert "wrong-key" not in event["message"]
    # What to fix, and where: the connection, its API key field, the environment variable.
    assert "connection 'chamelaion_default'" in event["message"]
    assert "'API key' field" in event["message"]
    assert "AIRFLOW_CONN_CHAMELAION_DEFAULT" in event["message"]
    calls = polls(idle(simulator), request_id)
    assert [call.status for call in calls] == [401]  # permanent: neither retried nor polled again


async def test_scripted_401_ends_with_error_at_once(simulator: Simulator, sim_hook: ChamelaionHook) -> None:
    request_id = submit(sim_hook)
    simulator.state.add_fault(kind="status", status=401, path="/requests/", times=5)
    event = only_event(await collect(LipsyncRequestTrigger(request_id, poll_interval=POLL)))
    assert event["status"] == "error"
    assert event["job_status"] is None  # never read
    assert len(polls(idle(simulator), request_id)) == 1


async def test_unknown_request_id_ends_with_error_at_once(simulator: Simulator) -> None:
    unknown = str(uuid.uuid4())
    event = only_event(await collect(LipsyncRequestTrigger(unknown, poll_interval=POLL)))
    assert event["status"] == "error"
    assert event["request_id"] == unknown
    assert "404" in event["message"]
    assert len(polls(idle(simulator), unknown)) == 1


def test_missing_connection_ends_with_error_event(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_CHAMELAION_DEFAULT", raising=False)
    event = only_event(asyncio.run(collect(LipsyncRequestTrigger("abc", poll_interval=POLL))))
    assert event["status"] == "error"
    assert "chamelaion_default" in event["message"]


# -- transient errors -----------------------------------------------------------------------------------


async def test_transient_faults_mid_wait_do_not_end_the_wait(
    simulator: Simulator, sim_hook: ChamelaionHook, fast_hooks: Callable[..., None]
) -> None:
    fast_hooks(max_attempts=1)  # every fault reaches the trigger itself
    request_id = submit(sim_hook)
    simulator.state.force_status(request_id, "running")
    task = asyncio.ensure_future(collect(LipsyncRequestTrigger(request_id, poll_interval=POLL)))
    await wait_until(lambda: len(polls(simulator, request_id)) >= 2)
    for _ in range(3):
        simulator.state.add_fault(kind="status", status=503, path="/requests/")
    simulator.state.add_fault(kind="drop", path="/requests/")
    await wait_until(lambda: not simulator.state.faults)
    assert not task.done()
    simulator.state.force_status(request_id, "completed")
    event = only_event(await task)
    assert event["status"] == "completed"
    faulted = [call.fault for call in polls(idle(simulator), request_id) if call.fault]
    assert faulted == ["status", "status", "status", "drop"]


async def test_transient_faults_are_retried_within_a_poll(
    simulator: Simulator, sim_hook: ChamelaionHook, fast_hooks: Callable[..., None], sleeps: list[float]
) -> None:
    fast_hooks()
    request_id = submit(sim_hook)
    simulator.state.add_fault(kind="status", status=503, path="/requests/", times=2)
    # A body cut short (not a plain drop: aiohttp itself re-sends a GET once when a reused keep-alive
    # connection is closed under it, so a drop never reaches the policy).
    simulator.state.add_fault(kind="truncate", cut_at=10, path="/requests/")
    event = only_event(await collect(LipsyncRequestTrigger(request_id, poll_interval=POLL)))
    assert event["status"] == "completed"
    assert len(sleeps) == 3  # the hook's backoff waits, recorded instead of slept


async def test_max_consecutive_errors_ends_with_error(
    simulator: Simulator, sim_hook: ChamelaionHook, fast_hooks: Callable[..., None]
) -> None:
    fast_hooks(max_attempts=1)
    request_id = submit(sim_hook)
    simulator.state.add_fault(kind="status", status=503, path="/requests/", times=50)
    trigger = LipsyncRequestTrigger(request_id, poll_interval=POLL, max_consecutive_errors=3)
    event = only_event(await collect(trigger))
    assert event["status"] == "error"
    assert "503" in event["message"]
    assert len(polls(idle(simulator), request_id)) == 3


async def test_successful_poll_resets_the_error_count(
    simulator: Simulator, sim_hook: ChamelaionHook, fast_hooks: Callable[..., None]
) -> None:
    fast_hooks(max_attempts=1)
    request_id = submit(sim_hook)
    simulator.state.force_status(request_id, "running")
    simulator.state.add_fault(kind="status", status=503, path="/requests/")
    task = asyncio.ensure_future(
        collect(LipsyncRequestTrigger(request_id, poll_interval=POLL, max_consecutive_errors=2))
    )

    def ok_after_fault() -> bool:
        statuses = [call.status for call in polls(simulator, request_id)]
        return 503 in statuses and statuses[-1] == 200

    await wait_until(ok_after_fault)
    simulator.state.add_fault(kind="status", status=503, path="/requests/")
    await wait_until(lambda: not simulator.state.faults)
    await wait_until(lambda: polls(simulator, request_id)[-1].status == 200)
    assert not task.done()
    simulator.state.force_status(request_id, "completed")
    assert only_event(await task)["status"] == "completed"
    assert [call.status for call in polls(idle(simulator), request_id)].count(503) == 2


async def test_unknown_status_keeps_polling_until_it_changes(
    simulator: Simulator, sim_hook: ChamelaionHook
) -> None:
    request_id = submit(sim_hook)
    simulator.state.force_status(request_id, "processing")
    task = asyncio.ensure_future(collect(LipsyncRequestTrigger(request_id, poll_interval=POLL)))
    await wait_until(lambda: len(polls(simulator, request_id)) >= 4)
    assert not task.done()
    simulator.state.force_status(request_id, "completed")
    event = only_event(await task)
    assert (event["status"], event["job_status"]) == ("completed", "completed")


# -- resources ------------------------------------------------------------------------------------------


async def test_one_client_for_the_whole_run_on_the_loops_shared_session(
    simulator: Simulator, sim_hook: ChamelaionHook, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[ChamelaionHook] = []
    original = ChamelaionHook.shared_async_client

    def counting(self: ChamelaionHook) -> Any:
        opened.append(self)
        return original(self)

    monkeypatch.setattr(ChamelaionHook, "shared_async_client", counting)
    request_id = submit(sim_hook)
    simulator.state.force_status(request_id, "running")
    task = asyncio.ensure_future(collect(LipsyncRequestTrigger(request_id, poll_interval=POLL)))
    await wait_until(lambda: len(polls(simulator, request_id)) >= 3)
    simulator.state.force_status(request_id, "completed")
    assert only_event(await task)["status"] == "completed"
    assert len(opened) == 1
    assert asyncio.get_running_loop() not in shared_session._SESSIONS  # closed with its last user


async def test_concurrent_triggers_share_one_session(simulator: Simulator, sim_hook: ChamelaionHook) -> None:
    ids = [submit(sim_hook) for _ in range(3)]
    for request_id in ids:
        simulator.state.force_status(request_id, "running")
    tasks = [asyncio.ensure_future(collect(LipsyncRequestTrigger(i, poll_interval=POLL))) for i in ids]
    await wait_until(lambda: all(len(polls(simulator, i)) >= 2 for i in ids))
    loop = asyncio.get_running_loop()
    assert shared_session._SESSIONS[loop].users == 3
    for request_id in ids:
        simulator.state.force_status(request_id, "completed")
    events = [only_event(await task) for task in tasks]
    assert [event["status"] for event in events] == ["completed"] * 3
    assert loop not in shared_session._SESSIONS


async def test_run_never_calls_the_sync_connection_lookup(
    simulator: Simulator, sim_hook: ChamelaionHook, monkeypatch: pytest.MonkeyPatch
) -> None:
    request_id = submit(sim_hook)  # the sync hook may look its connection up; the trigger may not

    forbid_sync_lookup_on_the_loop(monkeypatch)
    event = only_event(await collect(LipsyncRequestTrigger(request_id, poll_interval=POLL)))
    assert event["status"] == "completed", event["message"]


# -- a scripted server: the exact wire exchange over the trigger's real aiohttp session -----------------


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ScriptedServer]:
    """A scripted server on a loopback socket, with ``chamelaion_default`` pointing at it."""
    async for running in scripted_server():
        monkeypatch.setenv("AIRFLOW_CONN_CHAMELAION_DEFAULT", connection_json(running.base_url))
        yield running


def _request_json(request_id: str, status: str, **extra: str) -> dict[str, str]:
    return {"id": request_id, "status": status, "created_at": "2026-01-01T00:00:00Z", **extra}


async def test_scripted_polls_with_the_key_until_completed(server: ScriptedServer) -> None:
    server.answer(
        Reply(200, _request_json("r-1", "queued")),
        Reply(200, _request_json("r-1", "running")),
        Reply(200, _request_json("r-1", "completed", output_url="https://cdn.test/o.mp4")),
    )
    event = only_event(await collect(LipsyncRequestTrigger("r-1", poll_interval=POLL)))
    assert event["status"] == "completed"
    assert "https://cdn.test/o.mp4" not in json.dumps(event)
    assert [seen.raw_path for seen in server.seen] == ["/api/v1/lipsync/requests/r-1"] * 3
    assert all(seen.headers["x-api-key"] == API_KEY for seen in server.seen)
    assert len({seen.client_port for seen in server.seen}) == 1  # one keep-alive connection for the wait


async def test_scripted_401_ends_at_once_with_the_api_message(server: ScriptedServer) -> None:
    server.default = Reply(401, {"message": "Invalid API key"})
    event = only_event(await collect(LipsyncRequestTrigger("r-2", poll_interval=POLL)))
    assert event["status"] == "error"
    assert "Invalid API key" in event["message"]
    assert len(server.seen) == 1


async def test_scripted_malformed_answers_count_as_transient_errors(server: ScriptedServer) -> None:
    server.answer(
        Reply(200, text='{"id": "r-4", "status": "compl'),
        Reply(200, {"unexpected": True}),
        Reply(200, _request_json("r-4", "completed", output_url="https://cdn.test/o.mp4")),
    )
    event = only_event(await collect(LipsyncRequestTrigger("r-4", poll_interval=POLL)))
    assert event["status"] == "completed"
    assert len(server.seen) == 3


async def test_unexpected_exception_still_yields_exactly_one_error_event(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def boom(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(shared_session.SharedSessionClient, "request", boom)
    event = only_event(await collect(LipsyncRequestTrigger("r-3", poll_interval=POLL)))
    assert event["status"] == "error"
    assert "boom" in event["message"]
