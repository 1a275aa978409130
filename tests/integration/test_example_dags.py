"""The example DAGs: they load cleanly, and each runs end to end with dag.test() against the simulator."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig
from airflow_provider_chamelaion.triggers.lipsync import LipsyncRequestTrigger
from airflow_provider_chamelaion.utils.links import LipsyncOutputLink
from airflow_provider_chamelaion.version_compat import (
    AIRFLOW_V_3_0_PLUS,
    AIRFLOW_V_3_1_PLUS,
    AIRFLOW_V_3_3_PLUS,
)
from tests.harness.constants import API_KEY, EXAMPLE_DAGS
from tests.harness.dags import load_dag_file, repair_airflow2_dag_test

EXAMPLE_FILES = sorted(EXAMPLE_DAGS.glob("example_*.py"))
_module_names = itertools.count()


def load_dag_module(name: str) -> ModuleType:
    """Import an example DAG file afresh, so it reads the environment the test just set."""
    return load_dag_file(EXAMPLE_DAGS / f"{name}.py", f"example_dag_{next(_module_names)}")


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    # Jobs take a couple of seconds, so every wait really defers instead of finding the job done.
    return SimulatorConfig(api_key=API_KEY, phases=(("queued", 1.0), ("running", 1.0)), output_size=96 * 1024)


@pytest.fixture
def dag_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_db: str, simulator: Simulator) -> Path:
    repair_airflow2_dag_test(monkeypatch)
    monkeypatch.setenv("CHAMELAION_OUTPUT_DIR", str(tmp_path / "outputs"))
    monkeypatch.setenv("CHAMELAION_MEDIA_DIR", str(tmp_path / "media"))
    monkeypatch.setenv("CHAMELAION_POLL_INTERVAL", "0.3")
    return tmp_path / "outputs"


@pytest.fixture
def trigger_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Request ids of every LipsyncRequestTrigger run (dag.test() runs triggers in this process)."""
    runs: list[str] = []
    original = LipsyncRequestTrigger.run

    def counting_run(self: LipsyncRequestTrigger) -> Any:
        runs.append(self.request_id)
        return original(self)

    monkeypatch.setattr(LipsyncRequestTrigger, "run", counting_run)
    return runs


def test_example_dags_load_without_errors() -> None:
    from tests.harness.airflow_names import DagBag

    bag = DagBag(dag_folder=str(EXAMPLE_DAGS))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {
        "chamelaion_nightly_localization",
        "chamelaion_catalogue_backfill",
        "chamelaion_upload",
        "chamelaion_dub_episode",
        "chamelaion_publish_dubbed_episode",
    }
    for dag_id in bag.dag_ids:
        assert "chamelaion" in bag.dags[dag_id].tags


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_example_dags_have_howto_markers(path: Path) -> None:
    text = path.read_text()
    starts = text.count("# [START howto_")
    assert starts >= 1
    assert starts == text.count("# [END howto_")


def test_nightly_localization_end_to_end(
    dag_env: Path, simulator: Simulator, trigger_runs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The simulator's jobs make no progress until a trigger runs, so the first wait finds its job still
    # queued and defers, on every line however slowly dag.test() runs the four submissions.
    real_clock = simulator.state.clock
    frozen_at = real_clock()
    monkeypatch.setattr(simulator.state, "clock", lambda: real_clock() if trigger_runs else frozen_at)
    module = load_dag_module("example_chamelaion_nightly_localization")
    run = module.dag.test()

    assert run.state == "success"
    jobs = list(simulator.state.jobs.values())
    assert len(jobs) == len(module.EPISODES) * len(module.LANGUAGES) == 4
    day = run.logical_date.strftime("%Y-%m-%d")
    expected = {f"{episode}-{language}-{day}" for episode in module.EPISODES for language in module.LANGUAGES}
    assert {job.reference_id for job in jobs} == expected
    # dag.test() runs tasks one at a time: the first wait defers (the trigger runs), and the jobs that
    # finished meanwhile are found complete by their sensor's first look, without deferring.
    assert trigger_runs
    assert set(trigger_runs) <= {job.id for job in jobs}
    # Each sensor's extra link is its job's output URL, as stored for the UI.
    waits = [ti for ti in run.get_task_instances() if ti.task_id == "wait"]
    assert len(waits) == 4
    for ti in waits:
        request = ti.xcom_pull(task_ids="wait", map_indexes=ti.map_index)
        if AIRFLOW_V_3_0_PLUS:  # Airflow 3 stores each extra link in XCom when the task ends
            link = ti.xcom_pull(task_ids="wait", key="_link_LipsyncOutputLink", map_indexes=ti.map_index)
        else:  # Airflow 2's webserver computes it when asked, from the serialized DAG
            from airflow.serialization.serialized_objects import SerializedDAG

            # (2.x API: Airflow 3, which mypy checks against, has no from_dict/to_dict)
            served = SerializedDAG.from_dict(SerializedDAG.to_dict(module.dag))  # type: ignore[attr-defined]
            link = served.get_task("wait").get_extra_links(ti, LipsyncOutputLink.name)
        assert link == request["output_url"]
        assert link.startswith(f"{simulator.origin}/outputs/{request['id']}.mp4?expires=")
    outputs = sorted(dag_env.iterdir())
    assert [path.name for path in outputs] == sorted(f"{ref}.mp4" for ref in expected)
    assert all(path.stat().st_size == simulator.config.output_size for path in outputs)


def test_catalogue_backfill_retries_failed_items_and_reruns_pay_nothing(
    dag_env: Path, simulator: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAMELAION_WORK_DIR", str(tmp_path / "work"))
    module = load_dag_module("example_chamelaion_catalogue_backfill")
    catalogue = [json.loads(line) for line in module.CATALOGUE.read_text().splitlines()]
    assert len(catalogue) == 2000
    simulator.state.fail_next(1)

    first = module.dag.test()

    jobs = list(simulator.state.jobs.values())
    statuses = sorted(simulator.state.status_of(job)[0] for job in jobs)
    assert {job.reference_id for job in jobs} == {item["reference_id"] for item in catalogue}
    # The failed item failed its chunk's task once every job of the chunk had finished; the task's retry
    # kept the other 999 and submitted that one again (a failed job is never reused). On Airflow 3.0 the
    # retry starts in execute_complete with the failed try's event, sees the event is not its own and
    # starts over from its manifest, as on every other line.
    assert first.state == "success"
    assert statuses == ["completed"] * 2000 + ["failed"]
    outputs = sorted(path.name for path in (dag_env / "catalogue").glob("*.mp4"))
    assert outputs == sorted(f"{item['reference_id']}.mp4" for item in catalogue)
    submissions = len(simulator.state.calls_to("POST"))
    downloads = len(simulator.state.calls_to("GET", "^/outputs/"))
    calls = len(simulator.state.calls)

    second = module.dag.test()  # a re-run of the backfill: every item that is not failed is done

    assert second.state == "success"
    assert len(simulator.state.jobs) == 2001
    assert len(simulator.state.calls_to("POST")) == submissions
    assert len(simulator.state.calls_to("GET", "^/outputs/")) == downloads
    assert len(simulator.state.calls) - calls <= 2000 / 40  # a few listing pages per chunk


def test_upload_mode_end_to_end(dag_env: Path, simulator: Simulator, trigger_runs: list[str]) -> None:
    module = load_dag_module("example_chamelaion_upload")
    run = module.dag.test()

    assert run.state == "success"
    assert simulator.state.uploads == [{"video": 512 * 1024, "audio": 64 * 1024}]
    assert len(trigger_runs) == 1
    outputs = list((dag_env / "upload").glob("*-promo-ja.mp4"))
    assert len(outputs) == 1
    assert outputs[0].stat().st_size == simulator.config.output_size


def test_a_run_without_a_logical_date_renders_the_day_it_was_triggered(
    dag_env: Path, simulator: Simulator
) -> None:
    """Airflow 3's Trigger button starts runs without a logical date, where ``{{ ds }}`` is undefined."""
    if not AIRFLOW_V_3_0_PLUS:
        pytest.skip("Airflow 2 gives every run a logical date")
    import pendulum

    module = load_dag_module("example_chamelaion_upload")
    run = module.dag.test(logical_date=None, run_after=pendulum.datetime(2026, 11, 26, 15, tz="UTC"))

    assert run.state == "success"
    assert run.logical_date is None
    [output] = (dag_env / "upload").iterdir()
    assert output.name == "2026-11-26-promo-ja.mp4"


def sync_example_dags() -> None:
    """Write the example DAGs (and the assets they schedule on) to the database, as the DAG processor does."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.utils.session import create_session

    manager = DagBundlesManager()
    with create_session() as session:
        manager.sync_bundles_to_db(session=session)
    for bundle in manager.get_all_dag_bundles():
        bundle.initialize()
        bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
        sync_bag_to_db(bag, bundle.name, bundle.version)


def test_a_new_dubbed_episode_triggers_the_consumer_dag(dag_env: Path, simulator: Simulator) -> None:
    if AIRFLOW_V_3_0_PLUS and not AIRFLOW_V_3_1_PLUS:
        pytest.skip(
            "Airflow 3.0's dag.test() fails a task whose outlet asset no DAG processor has registered "
            "(AirflowInactiveAssetInInletOrOutletException); a deployment's DAG processor registers it"
        )
    if not AIRFLOW_V_3_3_PLUS:
        # The asset tables and DAG-bundle sync this test reads are 3.3's; elsewhere the producer runs
        # end to end and its download writes the file (the asset event is Airflow's own to record).
        module = load_dag_module("example_chamelaion_assets")
        produced = module.producer.test()
        assert produced.state == "success"
        written = dag_env / "dubbed" / f"ep42-ja-{produced.logical_date:%Y-%m-%d}.mp4"
        assert written.stat().st_size == simulator.config.output_size
        return
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select, update

    module = load_dag_module("example_chamelaion_assets")
    sync_example_dags()
    with create_session() as session:  # what a user does in the UI: unpause the consumer
        session.execute(
            update(DagModel)
            .where(DagModel.dag_id == "chamelaion_publish_dubbed_episode")
            .values(is_paused=False)
        )

    produced = module.producer.test()

    assert produced.state == "success"
    [job] = simulator.state.jobs.values()
    written = dag_env / "dubbed" / f"ep42-ja-{produced.logical_date:%Y-%m-%d}.mp4"
    assert written.stat().st_size == simulator.config.output_size
    with create_session() as session:
        asset_id = session.scalar(
            select(AssetModel.id).where(AssetModel.name == "chamelaion_dubbed_episodes")
        )
        events = session.scalars(select(AssetEvent).where(AssetEvent.asset_id == asset_id)).all()
        event = events[-1]
        assert (event.source_dag_id, event.source_task_id) == ("chamelaion_dub_episode", "download")
        assert event.extra == {"path": str(written), "request_id": job.id}
        # What the scheduler acts on: the consumer is queued to run on this asset.
        queued = session.scalars(
            select(AssetDagRunQueue.target_dag_id).where(AssetDagRunQueue.asset_id == asset_id)
        ).all()
        assert "chamelaion_publish_dubbed_episode" in queued

    # The extra link Airflow stored for the UI: the finished job's (still valid) output URL.
    [submit] = [ti for ti in produced.get_task_instances() if ti.task_id == "submit"]
    request = submit.xcom_pull(task_ids="submit", key="request")
    assert request["output_url"].startswith(f"{simulator.origin}/outputs/{job.id}.mp4?expires=")
    assert submit.xcom_pull(task_ids="submit", key="_link_LipsyncOutputLink") == request["output_url"]

    consumed = module.consumer.test()

    assert consumed.state == "success"
    [publish] = [ti for ti in consumed.get_task_instances() if ti.task_id == "publish"]
    assert publish.xcom_pull(task_ids="publish") == {
        "path": str(written),
        "request_id": job.id,
        "size": simulator.config.output_size,
    }
