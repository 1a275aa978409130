"""Load under random faults: 200 mapped deferrable generate tasks in ONE dag.test() run.

The simulator answers 5 % of API calls with a random transient fault (503, 502 with an HTML page, 429,
a dropped connection, a slow answer; POSTs only ever get a 429). Every mapped task must still succeed,
and the simulator must hold exactly one job per task: no task paid twice.
"""

from __future__ import annotations

import collections
import os
import time
from pathlib import Path

import pytest

from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig
from tests.harness.constants import API_KEY
from tests.harness.dags import load_dag_file

DAGS = Path(__file__).resolve().parent / "dags"
DAG_FILE = DAGS / "chamelaion_load_with_faults.py"
TASKS = 200
FAULT_RATE = 0.05
SEED = 20261125
POLL_INTERVAL = 0.2

pytestmark = pytest.mark.slow


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return SimulatorConfig(
        api_key=API_KEY,
        phases=(("queued", 0.05), ("running", 0.05)),
        output_size=1024,
        fault_rate=FAULT_RATE,
        seed=SEED,
    )


@pytest.fixture
def test_dags_folder(monkeypatch: pytest.MonkeyPatch, airflow_db: str) -> Path:
    """Point the default ``dags-folder`` bundle at tests/integration/dags, so dag.test() finds the DAG file there."""
    import airflow.settings

    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS))
    monkeypatch.setattr(airflow.settings, "DAGS_FOLDER", str(DAGS))
    monkeypatch.setenv("CHAMELAION_LOAD_TASKS", str(TASKS))
    monkeypatch.setenv("CHAMELAION_POLL_INTERVAL", str(POLL_INTERVAL))
    return DAGS


def test_200_mapped_deferrable_tasks_survive_random_faults(
    test_dags_folder: Path, simulator: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    module = load_dag_file(DAG_FILE, "chamelaion_load_with_faults_dag")
    assert module.TASKS == TASKS

    started = time.monotonic()
    run = module.dag.test()
    runtime = time.monotonic() - started

    with create_session() as session:
        tis = (
            session.query(TaskInstance)
            .filter(TaskInstance.dag_id == module.dag.dag_id, TaskInstance.run_id == run.run_id)
            .all()
        )
        states = collections.Counter(str(ti.state) for ti in tis)
        tries = collections.Counter(ti.try_number for ti in tis)
        map_indexes = sorted(ti.map_index for ti in tis)

    state = simulator.state
    faults = [call for call in state.calls if call.fault]
    by_kind = collections.Counter(f"{call.method} {call.fault}:{call.status}" for call in faults)
    api_calls = [call for call in state.calls if call.path.startswith("/api/")]
    jobs = list(state.jobs.values())
    summary = (
        f"\nload with faults: {TASKS} mapped tasks, fault_rate={FAULT_RATE}, seed={SEED}: "
        f"runtime {runtime:.1f} s, run {run.state}, task states {dict(states)}, tries {dict(tries)}, "
        f"{len(jobs)} jobs, {len(api_calls)} API calls, {len(faults)} faults injected {dict(by_kind)}"
    )
    with capsys.disabled():
        print(summary)

    assert run.state == "success", summary
    assert map_indexes == list(range(TASKS)), summary
    assert states == {"success": TASKS}, summary
    assert len(jobs) == TASKS, summary
    assert len({job.reference_id for job in jobs}) == TASKS
    assert all(state.status_of(job)[0] == "completed" for job in jobs)
    assert faults, "a 5 % fault rate over this many calls must inject some faults"
    assert os.environ["CHAMELAION_LOAD_TASKS"] == str(TASKS)
