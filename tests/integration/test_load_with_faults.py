"""Load under random faults: 200 mapped deferrable generate tasks in ONE dag.test() run.

The simulator answers 5 % of API calls with a random transient fault (503, 502 with an HTML page, 429,
a dropped connection, a slow answer; POSTs only ever get a 429). Every mapped task must still succeed,
and the simulator must hold exactly one job per task: no task paid twice.

``CHAMELAION_TESTS_LOAD_TASKS`` sets the number of tasks (default 200). The compatibility legs set 50:
``dag.test()`` on Airflow 3.0 to 3.2 runs each task and each resumption through the in-process
execution API one after another, a few seconds each (measured: 371 s for 200 tasks on 3.0.6, 832 s
on 3.2.2, against about 80 s on 3.3), which alone would take a leg past CI's budget.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest

from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig
from tests.harness.constants import API_KEY
from tests.harness.processes import answer, run_python

DAGS = Path(__file__).resolve().parent / "dags"
DAG_FILE = DAGS / "chamelaion_load_with_faults.py"
TASKS = int(os.environ.get("CHAMELAION_TESTS_LOAD_TASKS", "200"))
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


CHILD = Path(__file__).resolve().parent / "children" / "load_child.py"


def test_mapped_deferrable_tasks_survive_random_faults(
    simulator: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW_CONN_CHAMELAION_DEFAULT": simulator.connection_json(),
        "CHAMELAION_LOAD_TASKS": str(TASKS),
        "CHAMELAION_POLL_INTERVAL": str(POLL_INTERVAL),
        "PYTHONUNBUFFERED": "1",
    }
    run = answer(run_python(str(CHILD), str(DAG_FILE), env=env, timeout=1200))
    states, tries, map_indexes = run["states"], run["tries"], run["map_indexes"]

    state = simulator.state
    faults = [call for call in state.calls if call.fault]
    by_kind = collections.Counter(f"{call.method} {call.fault}:{call.status}" for call in faults)
    api_calls = [call for call in state.calls if call.path.startswith("/api/")]
    jobs = list(state.jobs.values())
    summary = (
        f"\nload with faults: {TASKS} mapped tasks, fault_rate={FAULT_RATE}, seed={SEED}: "
        f"runtime {run['runtime_s']} s, run {run['state']}, task states {states}, tries {tries}, "
        f"{len(jobs)} jobs, {len(api_calls)} API calls, {len(faults)} faults injected {dict(by_kind)}"
    )
    with capsys.disabled():
        print(summary)

    assert run["tasks"] == TASKS
    assert run["state"] == "success", summary
    assert map_indexes == list(range(TASKS)), summary
    assert states == {"success": TASKS}, summary
    assert len(jobs) == TASKS, summary
    assert len({job.reference_id for job in jobs}) == TASKS
    assert all(state.status_of(job)[0] == "completed" for job in jobs)
    assert faults, "a 5 % fault rate over this many calls must inject some faults"
