"""LipsyncDownloadOperator: atomic, retried downloads of a finished job's output."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_chamelaion.client.retry import RetryPolicy
from airflow_provider_chamelaion.exceptions import (
    ChamelaionAuthError,
    ChamelaionConfigError,
    ChamelaionError,
    ChamelaionTransportError,
)
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
from airflow_provider_chamelaion.operators.lipsync import LipsyncDownloadOperator
from airflow_provider_chamelaion.simulator import Simulator
from airflow_provider_chamelaion.version_compat import ObjectStoragePath
from tests.harness.context import make_context as fake_context
from tests.harness.simulator import idle

if TYPE_CHECKING:
    from airflow_provider_chamelaion.version_compat import Context

REFERENCE_ID = "ep42-ja"


def make_context() -> Context:
    return fake_context(task_id="download")


def make_operator(
    request_id: str,
    destination: Any,
    retry_policy: RetryPolicy | None = None,
    max_attempts: int | None = None,
) -> LipsyncDownloadOperator:
    operator = LipsyncDownloadOperator(task_id="download", request_id=request_id, destination=destination)
    if retry_policy is not None:
        operator.hook = ChamelaionHook(max_attempts=max_attempts, retry_policy=retry_policy)
    return operator


@pytest.fixture
def done(simulator: Simulator, sim_hook: ChamelaionHook) -> str:
    """A completed job with reference_id ``ep42-ja``."""
    request_id = sim_hook.generate(
        "https://media.test/v.mp4", "https://media.test/a.wav", reference_id=REFERENCE_ID
    )
    simulator.state.force_status(request_id, "completed")
    return request_id


def assert_complete_output(path: Path, simulator: Simulator, request_id: str) -> None:
    content = path.read_bytes()
    assert len(content) == simulator.config.output_size
    assert content.startswith(f"chamelaion-simulated-output:{request_id}:".encode())


def output_calls(simulator: Simulator) -> list[Any]:
    return idle(simulator).state.calls_to("GET", "^/outputs/")


def leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def test_download_by_request_id_to_a_file(
    simulator: Simulator, done: str, retry_policy: RetryPolicy, tmp_path: Path
) -> None:
    target = tmp_path / "out" / "ep42-ja.mp4"  # the parent does not exist yet
    result = make_operator(done, str(target), retry_policy).execute(make_context())
    assert result == str(target)
    assert isinstance(result, str)
    assert_complete_output(target, simulator, done)
    assert leftovers(target.parent) == ["ep42-ja.mp4"]
    assert [call.status for call in output_calls(simulator)] == [200]


def test_download_by_reference_id_to_an_existing_directory(
    simulator: Simulator, done: str, retry_policy: RetryPolicy, tmp_path: Path
) -> None:
    result = make_operator(REFERENCE_ID, tmp_path, retry_policy).execute(make_context())
    assert result == str(tmp_path / f"{done}.mp4")
    assert_complete_output(Path(result), simulator, done)
    assert leftovers(tmp_path) == [f"{done}.mp4"]


def test_download_to_a_file_uri(
    simulator: Simulator, done: str, retry_policy: RetryPolicy, tmp_path: Path
) -> None:
    uri = f"file://{tmp_path}/lipsync.mp4"
    result = make_operator(done, uri, retry_policy).execute(make_context())
    assert isinstance(result, str)
    assert result.endswith("lipsync.mp4")
    assert ObjectStoragePath(result).read_bytes() == (tmp_path / "lipsync.mp4").read_bytes()
    assert_complete_output(tmp_path / "lipsync.mp4", simulator, done)
    assert leftovers(tmp_path) == ["lipsync.mp4"]


def test_download_to_an_object_storage_path(
    simulator: Simulator, done: str, retry_policy: RetryPolicy, tmp_path: Path
) -> None:
    destination = ObjectStoragePath(f"file://{tmp_path}/")
    result = make_operator(done, destination, retry_policy).execute(make_context())
    assert result.endswith(f"{done}.mp4")
    assert_complete_output(tmp_path / f"{done}.mp4", simulator, done)


@pytest.mark.parametrize("status", ["queued", "running", "processing"])
def test_unfinished_job_is_a_clear_error_naming_the_status(
    simulator: Simulator, done: str, retry_policy: RetryPolicy, tmp_path: Path, status: str
) -> None:
    simulator.state.force_status(done, status)
    with pytest.raises(ChamelaionError, match=rf"{done}.*no output_url.*'{status}'"):
        make_operator(done, tmp_path / "out.mp4", retry_policy).execute(make_context())
    assert leftovers(tmp_path) == []
    assert output_calls(simulator) == []


@pytest.mark.parametrize("destination", ["", "   ", None])
def test_empty_destination_is_rejected_before_any_call(
    simulator: Simulator, done: str, retry_policy: RetryPolicy, destination: Any
) -> None:
    calls_before = len(idle(simulator).state.calls)
    with pytest.raises(ChamelaionConfigError, match="destination"):
        make_operator(done, destination, retry_policy).execute(make_context())
    assert len(idle(simulator).state.calls) == calls_before


@pytest.mark.parametrize("request_id", ["ep42/ja", "", "a\nb"])
def test_bad_request_id_is_rejected_before_any_call(
    simulator: Simulator, retry_policy: RetryPolicy, tmp_path: Path, request_id: str
) -> None:
    with pytest.raises(ChamelaionConfigError, match="request_id"):
        make_operator(request_id, tmp_path / "out.mp4", retry_policy).execute(make_context())
    assert idle(simulator).state.calls == []


def test_truncated_download_is_retried_and_complete(
    simulator: Simulator, done: str, retry_policy: RetryPolicy, sleeps: list[float], tmp_path: Path
) -> None:
    simulator.state.add_fault(kind="truncate", path="/outputs/", cut_at=10_000, times=1)
    target = tmp_path / "out.mp4"
    assert make_operator(done, target, retry_policy).execute(make_context()) == str(target)
    assert_complete_output(target, simulator, done)
    assert [call.fault for call in output_calls(simulator)] == ["truncate", None]
    assert len(sleeps) == 1
    assert leftovers(tmp_path) == ["out.mp4"]


def test_truncated_every_time_fails_and_leaves_nothing(
    simulator: Simulator, done: str, retry_policy: RetryPolicy, tmp_path: Path
) -> None:
    simulator.state.add_fault(kind="truncate", path="/outputs/", cut_at=10_000, times=10)
    destination = tmp_path / "outputs"
    destination.mkdir()
    with pytest.raises(ChamelaionTransportError):
        make_operator(done, destination / "out.mp4", retry_policy, max_attempts=2).execute(make_context())
    assert len(output_calls(simulator)) == 2
    assert leftovers(destination) == []  # neither the file nor a .part temporary


def test_truncated_every_time_into_a_directory_leaves_nothing(
    simulator: Simulator, done: str, retry_policy: RetryPolicy, tmp_path: Path
) -> None:
    simulator.state.add_fault(kind="truncate", path="/outputs/", cut_at=1, times=10)
    with pytest.raises(ChamelaionTransportError):
        make_operator(done, tmp_path, retry_policy, max_attempts=2).execute(make_context())
    assert leftovers(tmp_path) == []


def test_failed_download_keeps_an_existing_file(
    simulator: Simulator, done: str, retry_policy: RetryPolicy, tmp_path: Path
) -> None:
    target = tmp_path / "out.mp4"
    target.write_bytes(b"previous run")
    simulator.state.add_fault(kind="truncate", path="/outputs/", cut_at=10_000, times=10)
    with pytest.raises(ChamelaionTransportError):
        make_operator(done, target, retry_policy, max_attempts=2).execute(make_context())
    assert target.read_bytes() == b"previous run"
    assert leftovers(tmp_path) == ["out.mp4"]


def test_an_empty_output_fails_naming_the_request_and_leaves_nothing(
    simulator: Simulator, sim_hook: ChamelaionHook, retry_policy: RetryPolicy, tmp_path: Path
) -> None:
    simulator.state.empty_output_next(1)
    request_id = sim_hook.generate(
        "https://media.test/v.mp4", "https://media.test/a.wav", reference_id="ep43"
    )
    simulator.state.force_status(request_id, "completed")

    with pytest.raises(ChamelaionError) as raised:
        make_operator(request_id, tmp_path / "out.mp4", retry_policy).execute(make_context())

    assert request_id in str(raised.value)
    assert "the API returned an empty output" in str(raised.value)
    assert leftovers(tmp_path) == []
    assert len(output_calls(simulator)) == 1  # not retried: asking again gives the same empty output


def test_expired_output_url_is_refreshed_once(
    simulator: Simulator, done: str, retry_policy: RetryPolicy, tmp_path: Path
) -> None:
    simulator.state.add_fault(kind="status", status=403, path="/outputs/", times=1)
    target = tmp_path / "out.mp4"
    make_operator(done, target, retry_policy).execute(make_context())
    assert_complete_output(target, simulator, done)
    assert [call.status for call in output_calls(simulator)] == [403, 200]
    assert len(idle(simulator).state.calls_to("GET", f"/requests/{done}$")) == 2  # read, then re-read once


def test_output_refused_twice_fails(
    simulator: Simulator, done: str, retry_policy: RetryPolicy, tmp_path: Path
) -> None:
    simulator.state.add_fault(kind="status", status=403, path="/outputs/", times=5)
    with pytest.raises(ChamelaionAuthError):
        make_operator(done, tmp_path / "out.mp4", retry_policy).execute(make_context())
    assert len(output_calls(simulator)) == 2
    assert len(idle(simulator).state.calls_to("GET", f"/requests/{done}$")) == 2
    assert leftovers(tmp_path) == []


def test_output_url_really_expires_and_is_refreshed(
    simulator: Simulator,
    done: str,
    retry_policy: RetryPolicy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A genuinely expired signature (not a scripted 403): the re-read gives a fresh, valid URL."""
    hook = ChamelaionHook(retry_policy=retry_policy)
    stale = hook.get_request(done)
    monkeypatch.setattr(simulator.config, "output_url_ttl", -10.0)
    expired = hook.get_request(done)
    monkeypatch.setattr(simulator.config, "output_url_ttl", 3600.0)
    assert expired.output_url != stale.output_url
    target = tmp_path / "out.mp4"
    assert hook.download_output(expired, target) == target
    assert_complete_output(target, simulator, done)
    assert [call.status for call in output_calls(simulator)] == [403, 200]


# -- the destination as an asset ------------------------------------------------------------------------


def named_asset(name: str, uri: str) -> Any:
    """``Asset(name, uri=uri)``; Airflow 2's ``Dataset`` has a URI and no name."""
    from airflow_provider_chamelaion.version_compat import AIRFLOW_V_3_0_PLUS, Asset

    return Asset(name, uri=uri) if AIRFLOW_V_3_0_PLUS else Asset(uri=uri)


def test_asset_true_declares_the_fixed_destination_as_an_outlet(tmp_path: Path) -> None:
    from airflow_provider_chamelaion.version_compat import Asset  # Dataset on Airflow 2

    operator = LipsyncDownloadOperator(
        task_id="download", request_id="r", destination=str(tmp_path / "ep42.mp4"), asset=True
    )
    assert operator.outlets == [Asset(uri=(tmp_path / "ep42.mp4").as_uri())]


def test_asset_true_with_a_templated_destination_asks_for_a_named_asset() -> None:
    with pytest.raises(ChamelaionConfigError, match=r"asset=True needs a fixed destination.*asset=Asset\("):
        LipsyncDownloadOperator(task_id="download", request_id="r", destination="/d/{{ ds }}.mp4", asset=True)


def test_a_given_asset_is_kept_beside_other_outlets() -> None:
    episodes, other = (
        named_asset("dubbed_episodes", "file:///d/dubbed/"),
        named_asset("audit", "file:///d/audit"),
    )
    operator = LipsyncDownloadOperator(
        task_id="download",
        request_id="r",
        destination="/d/dubbed/{{ ds }}.mp4",
        asset=episodes,
        outlets=[other],
    )
    assert operator.outlets == [other, episodes]


def test_the_asset_event_says_which_file_landed(done: str, tmp_path: Path) -> None:
    episodes = named_asset("dubbed_episodes", f"file://{tmp_path}/")
    operator = LipsyncDownloadOperator(
        task_id="download", request_id=REFERENCE_ID, destination=f"{tmp_path}/", asset=episodes
    )
    context = make_context()
    event = SimpleNamespace(extra={})

    class OutletEvents:  # Airflow's accessor is looked up by asset (3.0's Asset is not hashable)
        def __getitem__(self, asset: Any) -> SimpleNamespace:
            assert asset == episodes
            return event

    context["outlet_events"] = OutletEvents()  # type: ignore[typeddict-item]
    written = operator.execute(context)
    assert event.extra == {"path": written, "request_id": done}
