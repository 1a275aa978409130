"""Batch vs per-item catalogue backfill on a real Airflow deployment (partial: see the report's scope).

``python -m benchmarks.batch_deployment [ITEMS]`` (default 200) runs ``bench_per_item`` and then
``bench_batch`` (benchmarks/dags/bench_catalogue.py) on the test harness's deployment: API server,
scheduler (LocalExecutor, the harness's parallelism 4), DAG processor and triggerer as separate processes on SQLite,
the simulator in this process (jobs ~10 s, poll 5 s). Each DAG runs twice (the second run is the
re-run). Writes ``benchmarks/results-batch.md``.

Measured per run: wall time, task instances, trigger rows (distinct ids sampled every 0.5 s), XCom
rows, API calls by kind, and CPU seconds per Airflow component (the process tree's own and reaped
children's user+system time, difference across the run).
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig
from tests.helpers.airflow_deployment import AirflowDeployment

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results-batch.md"
API_KEY = "bench-key"


def cpu_seconds(deployment: AirflowDeployment) -> dict[str, float]:
    totals: dict[str, float] = {}
    for name, component in deployment.components.items():
        total = 0.0
        try:
            root = psutil.Process(component.pid)
            for proc in [root, *root.children(recursive=True)]:
                with_children = proc.cpu_times()
                total += with_children.user + with_children.system
                total += with_children.children_user + with_children.children_system
        except psutil.Error:
            pass
        totals[name] = total
    return totals


def db_count(db: Path, sql: str, *args: Any) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return int(con.execute(sql, args).fetchone()[0])
    finally:
        con.close()


def run_once(deployment: AirflowDeployment, sim: Simulator, dag_id: str) -> dict[str, Any]:
    db = deployment.db_path
    calls_before = len(sim.state.calls)
    jobs_before = len(sim.state.jobs)
    cpu_before = cpu_seconds(deployment)
    triggers: set[int] = set()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
                triggers.update(row[0] for row in con.execute("SELECT id FROM trigger"))
                con.close()
            except sqlite3.Error:
                pass
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    logical = datetime.now(timezone.utc).isoformat()
    run_id = deployment.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": logical})[
        "dag_run_id"
    ]
    while True:
        state = deployment.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
        if state in ("success", "failed"):
            break
        deployment.check_alive()
        time.sleep(1)
    wall = time.monotonic() - started
    stop.set()
    sampler.join()
    cpu_after = cpu_seconds(deployment)
    kinds: Counter[str] = Counter()
    for call in sim.state.calls[calls_before:]:
        kind = (
            "POST"
            if call.method == "POST"
            else "list"
            if call.path.endswith("/requests")
            else ("download" if call.path.startswith("/outputs/") else "status GET")
        )
        kinds[kind] += 1
    return {
        "state": state,
        "wall_s": round(wall, 1),
        "task_instances": db_count(db, "SELECT COUNT(*) FROM task_instance WHERE run_id = ?", run_id),
        "trigger_rows": len(triggers),
        "xcom_rows": db_count(db, "SELECT COUNT(*) FROM xcom WHERE run_id = ?", run_id),
        "jobs_created": len(sim.state.jobs) - jobs_before,
        "api_calls": sum(kinds.values()),
        "calls_by_kind": dict(kinds),
        "cpu_s": {name: round(cpu_after[name] - cpu_before.get(name, 0.0), 1) for name in cpu_after},
    }


def main(argv: list[str]) -> int:
    items = int(argv[0]) if argv else 200
    work = Path(tempfile.mkdtemp(prefix="chamelaion-bench-batch-"))
    config = SimulatorConfig(
        api_key=API_KEY, phases=(("queued", 2.0), ("running", 8.0)), output_size=64 * 1024
    )
    results: dict[str, list[dict[str, Any]]] = {}
    with Simulator(config) as sim:
        deployment = AirflowDeployment(
            work / "airflow",
            dags_folder=ROOT / "benchmarks" / "dags",
            output_dir=work / "process-output",
            env={
                "AIRFLOW_CONN_CHAMELAION_DEFAULT": sim.connection_json(),
                "CHAMELAION_POLL_INTERVAL": "5",
                "CHAMELAION_OUTPUT_DIR": str(work / "outputs"),
                "BENCH_ITEMS": str(items),
                "PYTHONPATH": str(ROOT),
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "AIRFLOW__CORE__MAX_MAP_LENGTH": str(max(1024, items)),
            },
        )
        try:
            deployment.start()
            deployment.wait_until_healthy(timeout=180)
            for dag_id in ("bench_per_item", "bench_batch"):
                deadline = time.monotonic() + 180
                while deployment.api_response("GET", f"/api/v2/dags/{dag_id}").status_code != 200:
                    assert time.monotonic() < deadline, f"{dag_id} never parsed"
                    time.sleep(1)
            for dag_id in ("bench_per_item", "bench_batch"):
                results[dag_id] = []
                for attempt in ("first run", "re-run"):
                    print(f"[bench] {dag_id} {attempt} ...", flush=True)
                    result = run_once(deployment, sim, dag_id)
                    print(f"[bench] {dag_id} {attempt}: {result}", flush=True)
                    results[dag_id].append(result)
        finally:
            deployment.stop()
    write_report(items, results)
    return 0


def write_report(items: int, results: dict[str, list[dict[str, Any]]]) -> None:
    rows = []
    for dag_id, runs in results.items():
        for label, result in zip(("first run", "re-run"), runs, strict=False):
            cpu = result["cpu_s"]
            rows.append(
                f"| {dag_id} | {label} | {result['state']} | {result['wall_s']} | {result['task_instances']} | "
                f"{result['trigger_rows']} | {result['xcom_rows']} | {result['jobs_created']} | "
                f"{result['api_calls']} ({', '.join(f'{k} {v}' for k, v in sorted(result['calls_by_kind'].items()))}) | "
                + " / ".join(
                    f"{cpu.get(name, 0)}"
                    for name in ("scheduler", "api-server", "dag-processor", "triggerer")
                )
                + f" (sum {round(sum(cpu.values()), 1)}) |"
            )
    RESULTS.write_text(
        "\n".join(
            [
                "# Batch vs per-item catalogue backfill (partial benchmark)",
                "",
                f"`python -m benchmarks.batch_deployment {items}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC: "
                f"{items} items, simulator jobs 10 s (queued 2 s, running 8 s), poll 5 s. Deployment: the test "
                "harness's (API server, scheduler with LocalExecutor (parallelism 4), DAG processor, triggerer; "
                "SQLite), on a "
                "shared 2-core machine with other work running. **Not** the issue's target deployment "
                "(PostgreSQL, CeleryExecutor, Redis, two workers, S3): see the README for what is missing.",
                "",
                "| DAG | run | state | wall s | task instances | trigger rows | XCom rows | jobs created | API calls | "
                "CPU s scheduler / api-server / dag-processor / triggerer |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
                *rows,
                "",
            ]
        )
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
