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
from tests.deployment.harness.airflow_deployment import AirflowDeployment, DagRuns, trigger_rows, wait_for
from tests.harness.constants import API_KEY, EXAMPLE_DAGS
from tests.harness.simulator import JobPins

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
        pins = JobPins(sim)
        seen_triggers: set[int] = set()

        def list_calls(since: int = 0) -> int:
            with sim.state.lock:
                return sum(1 for call in sim.state.calls[since:] if call.path.endswith("/requests"))

        def diagnostics() -> str:
            return deployment.diagnostics(f"simulator jobs: {len(sim.state.jobs)}")

        try:
            deployment.start()
            deployment.wait_until_healthy(timeout=150)
            runs = DagRuns(deployment)
            runs.wait_until_parsed(DAG_ID)
            run_id = runs.trigger(DAG_ID, datetime.now(timezone.utc).replace(microsecond=0))

            def both_batches_deferred() -> list[dict[str, Any]] | None:
                deployment.check_alive()
                pins.pin_new()
                assert runs.state(DAG_ID, run_id) not in ("failed", "success"), diagnostics()
                triggers = trigger_rows(deployment.db_path, fernet)
                seen_triggers.update(row["id"] for row in triggers)
                if len(pins.jobs) < ITEMS or len(triggers) != CHUNKS:
                    return None
                if any(row["triggerer_id"] is None for row in triggers) or list_calls() < 2 * CHUNKS:
                    return None
                return triggers

            deferred = wait_for("both batches to defer", both_batches_deferred, 240, diagnostics=diagnostics)
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

            wait_for("the new triggerer to take over", taken_over, 120, diagnostics=diagnostics)
            pins.release()
            final_state = runs.wait_until_ended(DAG_ID, run_id, timeout=240)
            tis = deployment.api(
                "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 100}
            )["task_instances"]
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
