"""Never paying twice, never the wrong job: the situations users meet, whatever the API's clock says.

Each scenario runs LipsyncGenerateOperator (submit and wait) against the simulator with its clock
shifted by a year back, a day back, a day ahead and not at all, and asserts both how many jobs were
created and *which* job's output the task delivered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_chamelaion.client.retry import RetryPolicy
from airflow_provider_chamelaion.exceptions import ChamelaionAuthError
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
from airflow_provider_chamelaion.operators.lipsync import LipsyncGenerateOperator
from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig
from tests.harness.constants import API_KEY
from tests.harness.context import FakeTaskStateStore, FakeTI, make_context
from tests.harness.simulator import idle

DAY = 86400.0
CLOCK_OFFSETS = {
    "api-1-year-behind": -365 * DAY,
    "api-1-day-behind": -DAY,
    "api-1-day-ahead": DAY,
    "same-clock": 0.0,
}
RUN_ID = "scheduled__2026-11-25T00:00:00+00:00"
VIDEO = "https://media.test/ep42/video.mp4"
WRONG_AUDIO = "https://media.test/ep42/ja-draft.wav"
FIXED_AUDIO = "https://media.test/ep42/ja-final.wav"
GENERATE = "/generate$"
LIST = "/requests$"


@pytest.fixture(params=list(CLOCK_OFFSETS.values()), ids=list(CLOCK_OFFSETS))
def simulator_config(request: pytest.FixtureRequest) -> SimulatorConfig:
    return SimulatorConfig(
        api_key=API_KEY, phases=(("queued", 0.05), ("running", 0.05)), clock_offset=request.param
    )


def operator(
    retry_policy: RetryPolicy, *, task_id: str = "submit", audio: str = WRONG_AUDIO, **kwargs: Any
) -> LipsyncGenerateOperator:
    kwargs.setdefault("video_url", VIDEO)
    kwargs.setdefault("wait_for_completion", True)
    op = LipsyncGenerateOperator(task_id=task_id, audio_url=audio, poll_interval=0.05, timeout=60, **kwargs)
    op.hook = ChamelaionHook(retry_policy=retry_policy)
    return op


def run(op: LipsyncGenerateOperator, ti: FakeTI, store: FakeTaskStateStore | None) -> dict[str, Any]:
    """Execute one try; return the request dict it delivered (XCom ``request``)."""
    op.execute(make_context(ti, state_store=store))
    [delivered] = ti.pushed("request")
    return dict(delivered)


def assert_delivered(simulator: Simulator, delivered: dict[str, Any], *, audio: str) -> str:
    """The delivered output is that job's own, and the job was made from ``audio``; return its id."""
    job = simulator.state.jobs[delivered["id"]]
    assert delivered["status"] == "completed"
    assert f"/outputs/{job.id}.mp4?" in delivered["output_url"]
    assert job.inputs["audio"] == audio
    return job.id


def posts(simulator: Simulator) -> int:
    return len(idle(simulator).state.calls_to("POST", GENERATE))


# -- lost answers and task retries ---------------------------------------------------------------------------


@pytest.mark.parametrize("reference_id", [None, "ep42-ja"], ids=["derived", "own-reference-id"])
def test_lost_answer_costs_one_job(
    simulator: Simulator, retry_policy: RetryPolicy, reference_id: str | None
) -> None:
    simulator.state.add_fault(kind="drop_after", method="POST", path=GENERATE)
    ti = FakeTI(run_id=RUN_ID)
    delivered = run(operator(retry_policy, reference_id=reference_id), ti, FakeTaskStateStore())

    assert len(simulator.state.jobs) == 1
    assert posts(simulator) == 1
    assert assert_delivered(simulator, delivered, audio=WRONG_AUDIO) == ti.pushed("return_value")[0]


def test_lost_answer_with_an_older_job_of_the_same_reference_id_delivers_the_new_one(
    simulator: Simulator, retry_policy: RetryPolicy
) -> None:
    """Yesterday's job shares the user's reference_id; today's lost POST must not come back as it."""
    yesterday = run(operator(retry_policy, reference_id="ep42-ja"), FakeTI(run_id="yesterday"), None)
    simulator.state.add_fault(kind="drop_after", method="POST", path=GENERATE)

    today = run(
        operator(retry_policy, reference_id="ep42-ja", audio=FIXED_AUDIO), FakeTI(), FakeTaskStateStore()
    )

    assert len(simulator.state.jobs) == 2
    assert assert_delivered(simulator, today, audio=FIXED_AUDIO) != yesterday["id"]


def test_task_retry_after_a_lost_answer_and_a_failed_look_up_delivers_the_one_job(
    simulator: Simulator, retry_policy: RetryPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    older = run(operator(retry_policy, reference_id="ep42-ja"), FakeTI(run_id="last-week"), None)
    store = FakeTaskStateStore()
    first = operator(retry_policy, reference_id="ep42-ja")
    real_generate = first.hook.submit

    def lose_the_answer_and_the_look_up(*args: Any, **kwargs: Any) -> str:
        simulator.state.add_fault(kind="drop_after", method="POST", path=GENERATE)
        simulator.state.add_fault(kind="status", status=401, method="GET", path=LIST)
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(first.hook, "submit", lose_the_answer_and_the_look_up)
    with pytest.raises(ChamelaionAuthError):
        first.execute(make_context(FakeTI(try_number=1), state_store=store))
    [created] = [job for job in simulator.state.jobs if job != older["id"]]

    delivered = run(operator(retry_policy, reference_id="ep42-ja"), FakeTI(try_number=2), store)

    assert len(simulator.state.jobs) == 2  # last week's and this task instance's
    assert posts(simulator) == 2
    assert assert_delivered(simulator, delivered, audio=WRONG_AUDIO) == created


@pytest.mark.parametrize("reference_id", [None, "ep42-ja"], ids=["derived", "own-reference-id"])
def test_task_retry_with_re_signed_urls_costs_one_job(
    simulator: Simulator, retry_policy: RetryPolicy, reference_id: str | None
) -> None:
    store = FakeTaskStateStore()
    signed = "https://bucket.s3.test/ep42/video.mp4?X-Amz-Signature=first&X-Amz-Expires=600"
    resigned = "https://bucket.s3.test/ep42/video.mp4?X-Amz-Signature=second&X-Amz-Expires=900"
    first = operator(retry_policy, reference_id=reference_id, video_url=signed, wait_for_completion=False)
    first_id = first.execute(make_context(FakeTI(try_number=1), state_store=store))

    retry = operator(retry_policy, reference_id=reference_id, video_url=resigned)
    delivered = run(retry, FakeTI(try_number=2), store)

    assert len(simulator.state.jobs) == 1
    assert assert_delivered(simulator, delivered, audio=WRONG_AUDIO) == first_id


# -- different task instances, and clears after a fix ----------------------------------------------------------


def test_two_dags_whose_ids_collided_under_the_old_scheme_get_their_own_jobs(
    simulator: Simulator, retry_policy: RetryPolicy
) -> None:
    """dub-ja/submit and dub/ja-submit both derived airflow-dub-ja-submit-<run> before."""
    japanese = run(
        operator(retry_policy, task_id="submit", audio=WRONG_AUDIO),
        FakeTI(dag_id="dub-ja", task_id="submit", run_id=RUN_ID),
        FakeTaskStateStore(),
    )
    other = run(
        operator(retry_policy, task_id="ja-submit", audio=FIXED_AUDIO),
        FakeTI(dag_id="dub", task_id="ja-submit", run_id=RUN_ID),
        FakeTaskStateStore(),
    )

    assert len(simulator.state.jobs) == 2
    assert assert_delivered(simulator, japanese, audio=WRONG_AUDIO) != assert_delivered(
        simulator, other, audio=FIXED_AUDIO
    )


@pytest.mark.parametrize(
    ("first_reference_id", "fixed_reference_id"),
    [(None, None), ("ep42-ja", "ep42-ja"), ("ep42-ja", "ep42-ja-v2")],
    ids=["derived", "own-reference-id-kept", "own-reference-id-changed"],
)
def test_clear_after_fixing_the_audio_delivers_the_fixed_job(
    simulator: Simulator,
    retry_policy: RetryPolicy,
    first_reference_id: str | None,
    fixed_reference_id: str | None,
) -> None:
    store = FakeTaskStateStore()  # Airflow keeps the task state store across a clear
    wrong = run(operator(retry_policy, reference_id=first_reference_id), FakeTI(try_number=1), store)

    fixed_op = operator(retry_policy, reference_id=fixed_reference_id, audio=FIXED_AUDIO)
    fixed = run(fixed_op, FakeTI(try_number=2), store)

    assert len(simulator.state.jobs) == 2
    assert assert_delivered(simulator, fixed, audio=FIXED_AUDIO) != wrong["id"]


@pytest.mark.parametrize("reference_id", [None, "ep42-ja"], ids=["derived", "own-reference-id"])
def test_clear_without_changes_reuses_the_job(
    simulator: Simulator, retry_policy: RetryPolicy, reference_id: str | None
) -> None:
    store = FakeTaskStateStore()
    first = run(operator(retry_policy, reference_id=reference_id), FakeTI(try_number=1), store)
    again = run(operator(retry_policy, reference_id=reference_id), FakeTI(try_number=2), store)

    assert len(simulator.state.jobs) == 1
    assert assert_delivered(simulator, again, audio=WRONG_AUDIO) == first["id"]


def test_rerun_under_a_new_run_id_is_new_work_with_a_derived_reference_id(
    simulator: Simulator, retry_policy: RetryPolicy
) -> None:
    first = run(operator(retry_policy), FakeTI(run_id=RUN_ID), FakeTaskStateStore())
    rerun = run(
        operator(retry_policy), FakeTI(run_id="manual__2026-11-26T09:00:00+00:00"), FakeTaskStateStore()
    )

    assert len(simulator.state.jobs) == 2
    assert assert_delivered(simulator, rerun, audio=WRONG_AUDIO) != first["id"]


def test_rerun_with_reuse_existing_request_reuses_the_finished_job(
    simulator: Simulator, retry_policy: RetryPolicy
) -> None:
    kwargs: dict[str, Any] = {"reference_id": "title-42-ja", "reuse_existing_request": True}
    first = run(operator(retry_policy, **kwargs), FakeTI(run_id=RUN_ID), FakeTaskStateStore())
    rerun = run(operator(retry_policy, **kwargs), FakeTI(run_id="manual__2026-12-01"), FakeTaskStateStore())

    assert len(simulator.state.jobs) == 1
    assert assert_delivered(simulator, rerun, audio=WRONG_AUDIO) == first["id"]


def test_upload_mode_clear_after_replacing_the_audio_uploads_the_new_file(
    simulator: Simulator, retry_policy: RetryPolicy, tmp_path: Path
) -> None:
    """The earlier try's record is about the old files: no more deleting the store key by hand."""
    video, draft, final = tmp_path / "ep42.mp4", tmp_path / "ja-draft.wav", tmp_path / "ja-final.wav"
    video.write_bytes(b"v" * 5000)
    draft.write_bytes(b"a" * 3000)
    final.write_bytes(b"b" * 3100)
    store = FakeTaskStateStore()

    def upload(audio: Path, ti: FakeTI) -> str:
        op = LipsyncGenerateOperator(task_id="submit", video_file=str(video), audio_file=str(audio))
        op.hook = ChamelaionHook(retry_policy=retry_policy)
        return op.execute(make_context(ti, state_store=store))

    first = upload(draft, FakeTI(try_number=1))
    again = upload(draft, FakeTI(try_number=2))  # a retry with the same files: reused
    fixed = upload(final, FakeTI(try_number=3))  # cleared after the fix: uploaded anew

    assert again == first
    assert fixed != first
    assert len(simulator.state.jobs) == 2
    assert simulator.state.uploads == [{"video": 5000, "audio": 3000}, {"video": 5000, "audio": 3100}]
