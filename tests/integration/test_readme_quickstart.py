"""The README's Quickstart DAG, copied as written, runs on a plain install of this Airflow line.

The block is run verbatim (only where the output lands moves, into the test's folder) in a fresh
interpreter against the simulator: with ``airflow dags test``, as the README says, and with
``dag.test()`` for a second run of the same day (on Airflow 3 without a logical date, as the UI's
Trigger button starts one) and a run of the next day. What its comments promise is checked: one job per
day, the same day pays once, ``catchup=False``.

(The first Quickstart wrote to ``s3://``: on a plain install it paid for a job, then failed. Its
object-storage variant is now refused when the DAG is parsed: tests/unit/client/test_media.py.)
"""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest

from airflow_provider_chamelaion.version_compat import AIRFLOW_V_3_0_PLUS
from tests.harness.constants import API_KEY, ROOT
from tests.harness.processes import answer, run_python

pytestmark = pytest.mark.usefixtures("airflow_db")

#: The days of the three runs: a run of DAY_1 with a logical date, a second run of DAY_1 (Airflow 3:
#: without a logical date, run_after on that day; Airflow 2: a manual run's logical date that day),
#: and a run of DAY_2.
DAY_1, DAY_2 = "2026-11-24", "2026-11-25"

RUNNER = """
import json, os, subprocess, sys
import pendulum
from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig
from airflow_provider_chamelaion.version_compat import AIRFLOW_V_3_0_PLUS
from tests.harness.airflow_names import DagBag

day_1, day_2 = sys.argv[2], sys.argv[3]
# Jobs complete at once: the sensor's first look finds the job done, so each run takes seconds.
with Simulator(SimulatorConfig(api_key=os.environ["KEY"], phases=(), output_size=2048)) as sim:
    os.environ["AIRFLOW_CONN_CHAMELAION_DEFAULT"] = sim.connection_json()
    # 1. As the README says: `airflow dags test dub_episode`, here for a given day.
    cli = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", "dub_episode", day_1],
        capture_output=True, text=True, check=False,
    )
    assert cli.returncode == 0, cli.stdout[-3000:] + cli.stderr[-3000:]
    jobs_after_cli = len(sim.state.jobs)

    bag = DagBag(dag_folder=sys.argv[1])
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag("dub_episode")
    later_that_day = pendulum.parse(day_1).add(hours=15)
    # 2. The same day again: on Airflow 3 a run without a logical date (run_after that afternoon).
    if AIRFLOW_V_3_0_PLUS:
        again = dag.test(logical_date=None, run_after=later_that_day)
    else:
        again = dag.test(execution_date=later_that_day)
    # 3. The next day.
    next_day = dag.test(**{"logical_date" if AIRFLOW_V_3_0_PLUS else "execution_date": pendulum.parse(day_2)})
    print("ANSWER " + json.dumps({
        "catchup": dag.catchup,
        "jobs_after_cli": jobs_after_cli,
        "states": [str(again.state), str(next_day.state)],
        "again_logical_date": None if again.logical_date is None else str(again.logical_date),
        "references": sorted(job.reference_id for job in sim.state.jobs.values()),
        "posts": len(sim.state.calls_to("POST")),
    }))
"""


def quickstart_code() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)[:1]
    return code


def test_quickstart_writes_to_a_local_path_and_imports_what_every_line_has() -> None:
    code = quickstart_code()
    assert 'destination=f"/tmp/dubs/{DAY}/ep42-ja.mp4"' in code
    # airflow.sdk does not exist on Airflow 2.11; `from airflow import DAG` works on 2.11 and 3.x.
    assert "airflow.sdk" not in code.split("#")[0]


def test_quickstart_runs_as_written(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    # Only where the output lands moves, into this test's folder.
    code = quickstart_code()
    (dags / "dub_episode.py").write_text(code.replace("/tmp/dubs/", f"{tmp_path}/dubs/"))
    env = {**os.environ, "KEY": API_KEY, "AIRFLOW__CORE__DAGS_FOLDER": str(dags), "PYTHONWARNINGS": "ignore"}
    answered = answer(
        run_python("-c", textwrap.dedent(RUNNER), str(dags), DAY_1, DAY_2, env=env, timeout=600)
    )
    assert answered["catchup"] is False
    assert answered["jobs_after_cli"] == 1
    assert answered["states"] == ["success", "success"]
    if AIRFLOW_V_3_0_PLUS:
        assert answered["again_logical_date"] is None  # `{{ ds }}` is undefined there: DAY still renders
    # The same day paid once (the second run reused its job); the next day paid for its own.
    assert answered["references"] == [f"ep42-ja-{DAY_1}", f"ep42-ja-{DAY_2}"]
    assert answered["posts"] == 2
    for day in (DAY_1, DAY_2):
        assert (tmp_path / "dubs" / day / "ep42-ja.mp4").stat().st_size == 2048
    assert sorted(path.name for path in (tmp_path / "dubs").iterdir()) == [DAY_1, DAY_2]
