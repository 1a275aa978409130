"""The batch catalogue backfill on a real Airflow 3 deployment, with the triggerer restarted mid-batch.

Same deployment as test_real_deployment.py (API server, scheduler with LocalExecutor, DAG processor and
triggerer as separate processes, SQLite). ``chamelaion_catalogue_backfill`` runs its 2,000 items in two
chunks; while both batch triggers are deferred the triggerer is stopped and a new one started. The
simulator pins every job at ``running`` until the new triggerer has polled, so the batch can only finish
through it. The whole catalogue costs 5 task instances and 2 trigger rows.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from airflow_provider_chamelaion.batch.manifest import read_manifest
from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig
from tests.deployment.harness.airflow_deployment import AirflowDeployment
from tests.harness.constants import API_KEY, EXAMPLE_DAGS
from tests.integration.test_real_deployment import trigger_rows, wait_for

DAG_ID = "chamelaion_catalogue_backfill"
ITEMS = 2000
CHUNKS = 2


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_batch_backfill_survives_a_triggerer_restart(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    config = SimulatorConfig(api_key=API_KEY, phases=(("queued", 1.0), ("running", 1.0)), output_size=4096)
    with Simulator(config) as sim:
        deployment = AirflowDeployment(
            tmp_path / "airflow",
            dags_folder=EXAMPLE_DAGS,
            output_dir=tmp_path / "process-output",
            env={
                "AIRFLOW_CONN_CHAMELAION_DEFAULT": sim.connection_json(),
                "CHAMELAION_POLL_INTERVAL": "1",
                "CHAMELAION_OUTPUT_DIR": str(outputs),
                "CHAMELAION_WORK_DIR": str(tmp_path / "work"),
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            },
        )
        fernet = Fernet(deployment.fernet_key.encode())
        pinned: set[str] = set()
        seen_triggers: set[int] = set()

        def pin_new_jobs() -> None:
            for job_id in list(sim.state.jobs):
                if job_id not in pinned:
                    sim.state.force_status(job_id, "running")
                    pinned.add(job_id)

        def list_calls(since: int = 0) -> int:
            with sim.state.lock:
                return sum(1 for call in sim.state.calls[since:] if call.path.endswith("/requests"))

        def diagnostics() -> str:
            return deployment.diagnostics(f"simulator jobs: {len(sim.state.jobs)}")

        try:
            deployment.start()
            deployment.wait_until_healthy(timeout=150)
            runs = f"/api/v2/dags/{DAG_ID}/dagRuns"

            def dag_parsed() -> bool:
                deployment.check_alive()
                return deployment.api_response("GET", f"/api/v2/dags/{DAG_ID}").status_code == 200

            wait_for("the DAG to be parsed", dag_parsed, timeout=120, every=1)
            logical_date = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
            run_id = deployment.api("POST", runs, json={"logical_date": logical_date})["dag_run_id"]

            def run_state() -> str:
                return str(deployment.api("GET", f"{runs}/{run_id}")["state"])

            def both_batches_deferred() -> list[dict[str, Any]] | None:
                deployment.check_alive()
                pin_new_jobs()
                assert run_state() not in ("failed", "success"), diagnostics()
                triggers = trigger_rows(deployment.db_path, fernet)
                seen_triggers.update(row["id"] for row in triggers)
                if len(pinned) < ITEMS or len(triggers) != CHUNKS:
                    return None
                if any(row["triggerer_id"] is None for row in triggers) or list_calls() < 2 * CHUNKS:
                    return None
                return triggers

            try:
                deferred = wait_for("both batches to defer", both_batches_deferred, timeout=240)
            except TimeoutError as err:
                raise AssertionError(f"{err}\n{diagnostics()}") from err
            old = {row["triggerer_id"] for row in deferred}
            assert all(len(row["kwargs"]) < 1000 for row in deferred), "trigger kwargs stay small"

            deployment.stop_component("triggerer", grace=10)
            mark = len(sim.state.calls)
            deployment.start_component("triggerer")

            def taken_over() -> bool:
                deployment.check_alive()
                triggers = trigger_rows(deployment.db_path, fernet)
                seen_triggers.update(row["id"] for row in triggers)
                taken = len(triggers) == CHUNKS and all(
                    row["triggerer_id"] is not None and row["triggerer_id"] not in old for row in triggers
                )
                return taken and list_calls(since=mark) >= CHUNKS

            try:
                wait_for("the new triggerer to take over", taken_over, timeout=120)
            except TimeoutError as err:
                raise AssertionError(f"{err}\n{diagnostics()}") from err
            with sim.state.lock:
                for job_id in pinned:
                    sim.state.jobs[job_id].forced_status = None

            def finished() -> str | None:
                deployment.check_alive()
                state = run_state()
                return state if state in ("success", "failed") else None

            final_state = wait_for("the run to finish", finished, timeout=240, every=1)
            tis = deployment.api("GET", f"{runs}/{run_id}/taskInstances", params={"limit": 100})[
                "task_instances"
            ]
        finally:
            deployment.stop()
        jobs = list(sim.state.jobs.values())

    assert final_state == "success", diagnostics()
    assert len(jobs) == ITEMS
    assert len({job.reference_id for job in jobs}) == ITEMS, "exactly one job per reference_id"
    assert sorted((ti["task_id"], ti["map_index"]) for ti in tis) == [
        ("backfill", 0),
        ("backfill", 1),
        ("chunks", -1),
        ("download", 0),
        ("download", 1),
    ]
    assert len(seen_triggers) == CHUNKS, "one trigger row per batch"
    assert len(list((outputs / "catalogue").glob("*.mp4"))) == ITEMS
    manifests = sorted((tmp_path / "work").rglob("manifest-*.jsonl"))
    rows = [row.to_dict() for path in manifests for row in read_manifest(path)]
    assert len(rows) == ITEMS
    assert {row["status"] for row in rows} == {"completed"}
