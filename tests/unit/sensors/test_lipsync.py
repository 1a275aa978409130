"""LipsyncRequestSensor: poke, poke-mode execute, deferral and every way of resuming."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_chamelaion.client.retry import RetryPolicy
from airflow_provider_chamelaion.exceptions import (
    ChamelaionAuthError,
    ChamelaionConfigError,
    ChamelaionError,
    ChamelaionNotFoundError,
)
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
from airflow_provider_chamelaion.sensors.lipsync import LipsyncRequestSensor
from airflow_provider_chamelaion.simulator import Simulator
from airflow_provider_chamelaion.triggers.lipsync import LipsyncRequestTrigger
from airflow_provider_chamelaion.version_compat import (
    AIRFLOW_V_3_1_PLUS,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    PokeReturnValue,
)
from tests.harness.airflow_names import TaskDeferred
from tests.harness.constants import API_KEY, connection_json
from tests.harness.context import make_context as fake_context
from tests.harness.logs import logged_messages, logged_text
from tests.harness.simulator import idle

if TYPE_CHECKING:
    from airflow_provider_chamelaion.version_compat import Context

POLL = 0.05


def make_context() -> Context:
    return fake_context(dag_id="lipsync_dag", task_id="wait")


def make_sensor(
    request_id: str,
    *,
    retry_policy: RetryPolicy | None = None,
    max_attempts: int | None = None,
    **kwargs: Any,
) -> LipsyncRequestSensor:
    kwargs.setdefault("poke_interval", POLL)
    kwargs.setdefault("timeout", 600)
    sensor = LipsyncRequestSensor(task_id="wait", request_id=request_id, **kwargs)
    if retry_policy is not None:
        sensor.hook = ChamelaionHook(max_attempts=max_attempts, retry_policy=retry_policy)
    return sensor


@pytest.fixture
def job(sim_hook: ChamelaionHook) -> str:
    """A freshly submitted job (queued)."""
    return sim_hook.generate("https://media.test/v.mp4", "https://media.test/a.wav", reference_id="ep42-ja")


def event(status: str, request_id: str = "r-1", **fields: Any) -> dict[str, Any]:
    """A trigger event as ``LipsyncRequestTrigger`` yields it (never with the request's output URL)."""
    payload: dict[str, Any] = {
        "status": status,
        "request_id": request_id,
        "job_status": None,
        "error_message": None,
        "message": "",
    }
    payload.update(fields)
    return payload


# -- poke -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["queued", "running", "processing", "Pending-Review"])
def test_poke_is_false_while_not_finished(
    simulator: Simulator, job: str, retry_policy: RetryPolicy, status: str
) -> None:
    simulator.state.force_status(job, status)
    assert make_sensor(job, retry_policy=retry_policy).poke(make_context()) is False


def test_poke_returns_the_request_when_completed(
    simulator: Simulator, job: str, retry_policy: RetryPolicy
) -> None:
    simulator.state.force_status(job, "completed")
    result = make_sensor(job, retry_policy=retry_policy).poke(make_context())
    assert isinstance(result, PokeReturnValue)
    assert result.is_done
    request = result.xcom_value
    assert isinstance(request, dict)
    assert request["id"] == job
    assert request["status"] == "completed"
    assert request["reference_id"] == "ep42-ja"
    assert request["output_url"].startswith(f"{simulator.origin}/outputs/{job}.mp4")


def test_poke_by_reference_id(simulator: Simulator, job: str, retry_policy: RetryPolicy) -> None:
    simulator.state.force_status(job, "completed")
    result = make_sensor("ep42-ja", retry_policy=retry_policy).poke(make_context())
    assert isinstance(result, PokeReturnValue)
    assert isinstance(result.xcom_value, dict)
    assert result.xcom_value["id"] == job


def test_poke_fails_with_api_message_and_id_when_failed(
    simulator: Simulator, job: str, retry_policy: RetryPolicy
) -> None:
    simulator.state.force_status(job, "failed", "Lip sync failed: audio is silent")
    with pytest.raises(AirflowFailException) as info:
        make_sensor(job, retry_policy=retry_policy).poke(make_context())
    assert "Lip sync failed: audio is silent" in str(info.value)
    assert job in str(info.value)


@pytest.mark.parametrize("kind", ["status", "drop"])
def test_transient_error_beyond_retries_makes_poke_false(
    simulator: Simulator, job: str, retry_policy: RetryPolicy, kind: str
) -> None:
    simulator.state.force_status(job, "completed")
    simulator.state.add_fault(kind=kind, status=503, path="/requests/")
    sensor = make_sensor(job, retry_policy=retry_policy, max_attempts=1)
    assert sensor.poke(make_context()) is False
    # The fault was the only thing standing between the sensor and success.
    assert isinstance(sensor.poke(make_context()), PokeReturnValue)


def test_wrong_api_key_raises(
    simulator: Simulator, job: str, retry_policy: RetryPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CHAMELAION_DEFAULT", connection_json(simulator.base_url, "not-the-key"))
    with pytest.raises(ChamelaionAuthError) as info:
        make_sensor(job, retry_policy=retry_policy).poke(make_context())
    assert info.value.status_code == 401
    assert len(idle(simulator).state.calls_to("GET", "/requests/")) == 1


def test_unknown_request_raises(simulator: Simulator, retry_policy: RetryPolicy) -> None:
    with pytest.raises(ChamelaionNotFoundError):
        make_sensor(str(uuid.uuid4()), retry_policy=retry_policy).poke(make_context())


@pytest.mark.parametrize("deferrable", [False, True])
def test_request_id_with_slash_is_rejected_before_any_call(simulator: Simulator, deferrable: bool) -> None:
    sensor = make_sensor("ep42/ja", deferrable=deferrable)
    with pytest.raises(ChamelaionConfigError, match="request_id"):
        sensor.poke(make_context())
    with pytest.raises(ChamelaionConfigError, match="request_id"):
        sensor.execute(make_context())
    assert idle(simulator).state.calls == []


# -- poke mode, end to end ------------------------------------------------------------------------------


def test_poke_mode_execute_returns_the_request_once_completed(
    simulator: Simulator, job: str, retry_policy: RetryPolicy
) -> None:
    sensor = make_sensor(job, retry_policy=retry_policy, deferrable=False, mode="poke", timeout=60)
    result = sensor.execute(make_context())
    assert result["id"] == job
    assert result["status"] == "completed"
    assert result["output_url"]


def test_poke_mode_execute_fails_when_the_job_fails(
    simulator: Simulator, sim_hook: ChamelaionHook, retry_policy: RetryPolicy
) -> None:
    simulator.state.fail_next()
    request_id = sim_hook.generate("https://media.test/v.mp4", "https://media.test/a.wav")
    sensor = make_sensor(request_id, retry_policy=retry_policy, deferrable=False, timeout=60)
    with pytest.raises(AirflowFailException, match=simulator.config.failure_message):
        sensor.execute(make_context())


def test_poke_mode_soft_fail_skips_a_failed_job(
    simulator: Simulator, job: str, retry_policy: RetryPolicy
) -> None:
    simulator.state.force_status(job, "failed")
    sensor = make_sensor(job, retry_policy=retry_policy, deferrable=False, soft_fail=True)
    with pytest.raises(AirflowSkipException):
        sensor.execute(make_context())


# -- deferrable -----------------------------------------------------------------------------------------


def test_execute_defers_with_a_trigger_for_the_request(
    simulator: Simulator, job: str, retry_policy: RetryPolicy
) -> None:
    simulator.state.force_status(job, "running")  # still running when execute looks
    sensor = make_sensor(job, retry_policy=retry_policy, deferrable=True, timeout=900, poke_interval=0.05)
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        sensor.execute(make_context())
    after = time.time()
    deferred = info.value
    assert deferred.method_name == "execute_complete"
    trigger = deferred.trigger
    assert isinstance(trigger, LipsyncRequestTrigger)
    assert trigger.request_id == job
    assert trigger.chamelaion_conn_id == "chamelaion_default"
    assert trigger.poll_interval == 0.05
    assert trigger.end_time is not None
    assert before + 900 <= trigger.end_time <= after + 900
    assert not deferred.kwargs  # resuming needs nothing but the event
    assert len(idle(simulator).state.calls_to("GET", f"/requests/{job}$")) == 1  # one look


@pytest.mark.parametrize(("given", "interval"), [({}, 300.0), ({"still_waiting_interval": 60}, 60.0)])
def test_the_trigger_says_still_waiting_at_the_sensors_interval(
    simulator: Simulator, job: str, retry_policy: RetryPolicy, given: dict[str, Any], interval: float
) -> None:
    simulator.state.force_status(job, "running")
    sensor = make_sensor(job, retry_policy=retry_policy, deferrable=True, **given)
    with pytest.raises(TaskDeferred) as info:
        sensor.execute(make_context())
    assert info.value.trigger.serialize()[1]["still_waiting_interval"] == interval


def test_poke_mode_says_still_waiting_at_the_sensors_interval(
    simulator: Simulator,
    job: str,
    retry_policy: RetryPolicy,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from airflow_provider_chamelaion.utils import progress

    clock = iter(range(0, 10_000, 20))  # each reading of the wait's clock: 20 s later
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=lambda: float(next(clock))))
    simulator.state.force_status(job, "running")
    sensor = make_sensor(job, retry_policy=retry_policy, mode="poke", still_waiting_interval=60)
    with logged_messages(caplog) as logs:
        for _ in range(6):  # pokes at 20, 40, ... 120 s (the reporter was made at 0 s)
            assert sensor.poke(make_context()) is False
    lines = [line for line in logs if job in line]
    assert lines == [
        f"Chamelaion lip-sync request {job} is running",
        f"Still waiting on Chamelaion lip-sync request {job}: running for 40.0 s (waiting 1 min 0 s in all)",
        f"Still waiting on Chamelaion lip-sync request {job}: running for 1 min 40 s (waiting 2 min 0 s in all)",
    ]


def test_execute_returns_at_once_if_already_completed(
    simulator: Simulator, job: str, retry_policy: RetryPolicy
) -> None:
    simulator.state.force_status(job, "completed")
    sensor = make_sensor(job, retry_policy=retry_policy, deferrable=True)
    result = sensor.execute(make_context())  # no TaskDeferred
    assert result["id"] == job
    assert result["status"] == "completed"


def test_execute_fails_at_once_if_already_failed(
    simulator: Simulator, job: str, retry_policy: RetryPolicy
) -> None:
    simulator.state.force_status(job, "failed", "no face")
    sensor = make_sensor(job, retry_policy=retry_policy, deferrable=True)
    with pytest.raises(AirflowFailException, match="no face"):
        sensor.execute(make_context())


def test_deferrable_soft_fail_skips_a_job_that_already_failed(
    simulator: Simulator, job: str, retry_policy: RetryPolicy
) -> None:
    simulator.state.force_status(job, "failed", "no face")
    sensor = make_sensor(job, retry_policy=retry_policy, deferrable=True, soft_fail=True)
    with pytest.raises(AirflowSkipException):
        sensor.execute(make_context())


def test_deferrable_soft_fail_skips_a_job_that_fails_after_deferral() -> None:
    sensor = make_sensor("r-9", deferrable=True, soft_fail=True)
    failed = event("failed", "r-9", job_status="failed", error_message="no face")
    with pytest.raises(AirflowSkipException):
        sensor.resume_execution(
            next_method="execute_complete", next_kwargs={"event": failed}, context=make_context()
        )


def test_deferral_round_trip_through_the_real_trigger(
    simulator: Simulator, job: str, retry_policy: RetryPolicy
) -> None:
    simulator.state.force_status(job, "running")  # still running when execute looks
    sensor = make_sensor(job, retry_policy=retry_policy, deferrable=True)
    with pytest.raises(TaskDeferred) as info:
        sensor.execute(make_context())
    trigger = info.value.trigger
    simulator.state.force_status(job, "completed")

    async def first_event() -> Any:
        async for fired in trigger.run():
            return fired
        return None

    fired = asyncio.run(asyncio.wait_for(first_event(), 20))
    assert "output_url" not in fired.payload  # the triggerer logs and stores the event: no signed URL
    gets_before = len(idle(simulator).state.calls_to("GET", f"/requests/{job}$"))
    result = sensor.resume_execution(info.value.method_name, {"event": fired.payload}, make_context())
    assert result["id"] == job
    assert result["status"] == "completed"
    assert str(result["output_url"]).startswith(f"{simulator.origin}/outputs/{job}.mp4?expires=")
    assert sensor.output_request == result  # what the extra link shows
    # The resumed task fetched the request once for its output URL.
    assert len(idle(simulator).state.calls_to("GET", f"/requests/{job}$")) == gets_before + 1


def test_execute_complete_needs_only_the_event(
    simulator: Simulator, job: str, retry_policy: RetryPolicy
) -> None:
    parameters = inspect.signature(LipsyncRequestSensor.execute_complete).parameters
    required = [
        name
        for name, parameter in parameters.items()
        if parameter.default is inspect.Parameter.empty and name not in ("self", "context")
    ]
    assert required == []
    simulator.state.force_status(job, "completed")
    sensor = make_sensor("ep42-ja", retry_policy=retry_policy, deferrable=True)
    request = sensor.execute_complete(make_context(), event=event("completed", job, job_status="completed"))
    assert (request["id"], request["status"], request["reference_id"]) == (job, "completed", "ep42-ja")
    assert str(request["output_url"]).startswith(f"{simulator.origin}/outputs/{job}.mp4?expires=")


def test_execute_complete_logs_the_output_url_without_its_signature(
    simulator: Simulator, job: str, retry_policy: RetryPolicy, caplog: pytest.LogCaptureFixture
) -> None:
    simulator.state.force_status(job, "completed")
    sensor = make_sensor(job, retry_policy=retry_policy, deferrable=True)
    with logged_text(caplog) as logs:
        request = sensor.execute_complete(make_context(), event=event("completed", job))
    text = "\n".join(logs)
    assert "sig=" in str(request["output_url"])  # XCom keeps the whole URL; the log does not
    assert f"{simulator.origin}/outputs/{job}.mp4?<signed query hidden>" in text
    assert "sig=" not in text


def test_execute_complete_when_the_api_no_longer_says_completed_is_an_error(
    simulator: Simulator, job: str, retry_policy: RetryPolicy
) -> None:
    simulator.state.force_status(job, "running")
    sensor = make_sensor(job, retry_policy=retry_policy, deferrable=True)
    with pytest.raises(ChamelaionError, match="was reported completed, but the API now says 'running'"):
        sensor.execute_complete(make_context(), event=event("completed", job))


def test_execute_complete_failed_raises_fail_with_message_and_id_without_a_call(
    simulator: Simulator,
) -> None:
    failed = event("failed", "r-9", job_status="failed", error_message="No face detected")
    with pytest.raises(AirflowFailException) as info:
        make_sensor("r-9").execute_complete(make_context(), event=failed)
    assert "No face detected" in str(info.value)
    assert "r-9" in str(info.value)
    assert idle(simulator).state.calls == []


def test_execute_complete_timeout_raises_sensor_timeout() -> None:
    with pytest.raises(AirflowSensorTimeout, match="did not finish"):
        make_sensor("r-1").execute_complete(
            make_context(), event=event("timeout", message="request r-1 did not finish")
        )


def test_execute_complete_error_raises_with_the_message() -> None:
    with pytest.raises(ChamelaionError, match="HTTP 401"):
        make_sensor("r-1").execute_complete(
            make_context(), event=event("error", message="Stopped waiting on r-1: HTTP 401")
        )


@pytest.mark.parametrize(
    "bad",
    [None, {}, {"status": "done"}, {"status": "completed", "request_id": None}, "completed"],
    ids=["none", "empty", "unknown-status", "completed-without-request-id", "not-a-dict"],
)
def test_execute_complete_malformed_event_is_an_error(bad: Any) -> None:
    with pytest.raises(ChamelaionError, match="Malformed"):
        make_sensor("r-1").execute_complete(make_context(), event=bad)


def test_soft_fail_turns_a_timeout_event_into_a_skip() -> None:
    sensor = make_sensor("r-1", deferrable=True, soft_fail=True)
    with pytest.raises(AirflowSkipException):
        sensor.resume_execution(
            next_method="execute_complete",
            next_kwargs={"event": event("timeout", message="request r-1 did not finish")},
            context=make_context(),
        )


def test_without_soft_fail_a_timeout_event_is_a_sensor_timeout() -> None:
    sensor = make_sensor("r-1", deferrable=True)
    with pytest.raises(AirflowSensorTimeout):
        sensor.resume_execution(
            next_method="execute_complete",
            next_kwargs={"event": event("timeout", message="request r-1 did not finish")},
            context=make_context(),
        )


def test_key_never_reaches_the_trigger(simulator: Simulator, job: str, retry_policy: RetryPolicy) -> None:
    simulator.state.force_status(job, "running")  # still running when execute looks
    sensor = make_sensor(job, retry_policy=retry_policy, deferrable=True)
    with pytest.raises(TaskDeferred) as info:
        sensor.execute(make_context())
    assert API_KEY not in repr(info.value.trigger.serialize())


# -- soft_fail: the same semantics in every mode ----------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        "Stopped waiting on r-1: Chamelaion API GET /v1/lipsync/requests/r-1 failed (HTTP 401): bad key",
        "Stopped waiting on r-1: Chamelaion API GET /v1/lipsync/requests/r-1 failed (HTTP 404): not found",
        "Stopped waiting on r-1: 10 polls in a row failed (HTTP 503)",
    ],
    ids=["revoked-key", "unknown-id", "outage"],
)
def test_deferrable_soft_fail_still_fails_on_an_error_event(message: str) -> None:
    """A trigger error is a configuration or outage problem: soft_fail must not hide it as a skip."""
    sensor = make_sensor("r-1", deferrable=True, soft_fail=True)
    with pytest.raises(ChamelaionError, match="Stopped waiting on r-1") as info:
        sensor.resume_execution(
            next_method="execute_complete",
            next_kwargs={"event": event("error", message=message)},
            context=make_context(),
        )
    assert not isinstance(info.value, AirflowSkipException)


def test_never_fail_still_skips_an_error_event() -> None:
    """never_fail is Airflow's "skip whatever happens": left as Airflow documents it."""
    sensor = make_sensor("r-1", deferrable=True, never_fail=True)
    # Before 3.1, resume_execution turns errors into skips for soft_fail only (never_fail: pokes only).
    expected = AirflowSkipException if AIRFLOW_V_3_1_PLUS else ChamelaionError
    with pytest.raises(expected):
        sensor.resume_execution(
            next_method="execute_complete",
            next_kwargs={"event": event("error", message="Stopped waiting on r-1: HTTP 401")},
            context=make_context(),
        )


@pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferrable"])
@pytest.mark.parametrize(("status", "error"), [(401, ChamelaionAuthError), (404, ChamelaionNotFoundError)])
def test_soft_fail_still_fails_on_a_permanent_error_at_the_first_look(
    simulator: Simulator,
    job: str,
    retry_policy: RetryPolicy,
    deferrable: bool,
    status: int,
    error: type[Exception],
) -> None:
    simulator.state.add_fault(kind="status", status=status, method="GET", path=f"/requests/{job}$")
    sensor = make_sensor(job, retry_policy=retry_policy, deferrable=deferrable, soft_fail=True)
    with pytest.raises(error):
        sensor.execute(make_context())


def test_deferrable_first_look_does_not_report_the_status_the_trigger_will(
    simulator: Simulator, job: str, retry_policy: RetryPolicy
) -> None:
    import structlog

    simulator.state.force_status(job, "queued")
    sensor = make_sensor(job, retry_policy=retry_policy, deferrable=True)
    with structlog.testing.capture_logs() as logs, pytest.raises(TaskDeferred):
        sensor.execute(make_context())
    assert not [entry for entry in logs if "is queued" in entry["event"]], logs
