"""The catalogue backfill on the deployment users run at this scale: PostgreSQL, Celery, Redis, S3.

``chamelaion_catalogue_backfill`` (the example DAG, over the shipped catalogue's first 400 items, put on
S3, in two chunks of 200) runs on a PostgreSQL
metadata database with CeleryExecutor, a Redis broker and two Celery workers that share no local disk
(each its own AIRFLOW_HOME, working directory and TMPDIR; one task slot each, so the two batch tasks
run on different workers). The catalogue chunks, the manifests and the outputs are on S3 (moto's
server mode), which both workers and the triggerer reach. Then the DAG runs again: the re-run creates no
job and downloads nothing.
"""

from __future__ import annotations

import contextlib
import json
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig
from tests.deployment.harness.airflow_deployment import DagRuns
from tests.deployment.harness.scale_deployment import (
    WORKERS,
    ScaleDeployment,
    ServicesUnavailable,
    ensure_debian_packages,
    scale_services,
)
from tests.harness.constants import API_KEY, EXAMPLE_DAGS

DAG_ID = "chamelaion_catalogue_backfill"
#: 400, not the shipped 2,000: each output costs moto about four S3 requests, and the test must stay
#: within a few minutes on two shared cores. The 2,000-item catalogue runs on SQLite in
#: test_batch_deployment.py.
ITEMS = 400
CHUNK_SIZE = 200
OUTPUT_SIZE = 4096
#: The example DAG's tasks for two chunks.
TASKS = [("backfill", 0), ("backfill", 1), ("chunks", -1), ("download", 0), ("download", 1)]


def run_dag(deployment: ScaleDeployment, sim: Simulator) -> dict[str, Any]:
    """Trigger one run and wait for it, sampling trigger rows; returns what the run cost."""
    runs = DagRuns(deployment)
    calls_before, jobs_before = len(sim.state.calls), len(sim.state.jobs)
    triggers: set[int] = set()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            # A sample lost to a busy database only makes the count a lower bound.
            with contextlib.suppress(Exception):
                triggers.update(deployment.trigger_ids())
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    run_id = runs.trigger(DAG_ID, datetime.now(timezone.utc))
    try:
        state = runs.wait_until_ended(DAG_ID, run_id, timeout=240)
    finally:
        stop.set()
        sampler.join()
    tis = deployment.api(
        "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 100}
    )["task_instances"]
    with sim.state.lock:
        calls = sim.state.calls[calls_before:]
        return {
            "run_id": run_id,
            "state": state,
            "tasks": sorted((ti["task_id"], ti["map_index"], ti["state"]) for ti in tis),
            "triggers": len(triggers),
            "jobs_created": len(sim.state.jobs) - jobs_before,
            "posts": sum(1 for call in calls if call.method == "POST"),
            "downloads": sum(1 for call in calls if call.path.startswith("/outputs/")),
        }


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_catalogue_backfill_on_postgres_celery_and_s3(tmp_path: Path) -> None:
    try:
        ensure_debian_packages()
    except ServicesUnavailable as err:
        pytest.skip(f"PostgreSQL/Redis unavailable and apt cannot install them: {err}")
    config = SimulatorConfig(
        api_key=API_KEY, phases=(("queued", 1.0), ("running", 1.0)), output_size=OUTPUT_SIZE
    )
    with scale_services(tmp_path / "services") as services, Simulator(config) as sim:
        bucket = services.bucket
        lines = (EXAMPLE_DAGS / "data" / "catalogue.jsonl").read_text().splitlines()[:ITEMS]
        services.s3().pipe(f"{bucket}/catalogue.jsonl", ("\n".join(lines) + "\n").encode())
        deployment = ScaleDeployment(
            tmp_path / "airflow",
            services=services,
            dags_folder=EXAMPLE_DAGS,
            output_dir=tmp_path / "process-output",
            worker_concurrency=1,
            env={
                "AIRFLOW_CONN_CHAMELAION_DEFAULT": sim.connection_json(),
                "CHAMELAION_POLL_INTERVAL": "1",
                "CHAMELAION_OUTPUT_DIR": f"s3://{bucket}/outputs",
                "CHAMELAION_WORK_DIR": f"s3://{bucket}/work",
                "CHAMELAION_CATALOGUE": f"s3://{bucket}/catalogue.jsonl",
                "CHAMELAION_CHUNK_SIZE": str(CHUNK_SIZE),
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            },
        )

        def diagnostics() -> str:
            return deployment.diagnostics(f"simulator jobs: {len(sim.state.jobs)}")

        try:
            deployment.start()
            deployment.wait_until_healthy(timeout=180)
            DagRuns(deployment).wait_until_parsed(DAG_ID)
            first = run_dag(deployment, sim)
            assert first["state"] == "success", diagnostics()
            second = run_dag(deployment, sim)
            assert second["state"] == "success", diagnostics()
        finally:
            deployment.stop()
        s3 = services.s3()
        listed = s3.ls(f"{bucket}/outputs/catalogue", detail=True)
        outputs = [entry for entry in listed if entry["type"] == "file"]
        records = s3.ls(f"{bucket}/outputs/catalogue/.chamelaion-downloads")
        manifests = sorted(s3.glob(f"{bucket}/work/**/manifest-*.jsonl"))
        parsed: list[dict[str, Any]] = [
            json.loads(line) for path in manifests for line in s3.cat(path).decode().splitlines()
        ]
        rows = [line for line in parsed if "reference_id" in line]  # the first line of each names its owner
        jobs = list(sim.state.jobs.values())
        task_logs = {name: list((deployment.worker_homes[name] / "logs").rglob("*.log")) for name in WORKERS}

    assert [(task, index) for task, index, _ in first["tasks"]] == TASKS
    assert {state for *_, state in first["tasks"] + second["tasks"]} == {"success"}
    assert first["jobs_created"] == ITEMS == first["posts"]
    assert len(jobs) == ITEMS
    assert len({job.reference_id for job in jobs}) == ITEMS, "one job per reference_id"
    assert first["downloads"] == ITEMS
    assert 1 <= first["triggers"] <= 2, "one trigger row per batch"
    assert (second["jobs_created"], second["posts"], second["downloads"]) == (0, 0, 0)
    assert len(outputs) == ITEMS
    assert {entry["size"] for entry in outputs} == {OUTPUT_SIZE}
    assert [entry["name"] for entry in listed if entry["type"] != "file"] == [
        f"{bucket}/outputs/catalogue/.chamelaion-downloads"
    ]
    assert len(records) == 2, "one downloads record per mapped download task, the same on the re-run"
    assert len(manifests) == 4, "two chunks' manifests per run, on S3"
    assert len(rows) == 2 * ITEMS
    assert {row["status"] for row in rows} == {"completed"}
    assert all(task_logs.values()), f"both workers ran tasks, logging to their own disk: {task_logs}"
