"""The README's Quickstart DAG, copied as written, runs on a plain install against the simulator.

(The first Quickstart wrote to ``s3://``: on a plain install it paid for a job, then failed. Its
object-storage variant is now refused when the DAG is parsed: tests/test_media.py.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import API_KEY, ROOT

pytestmark = pytest.mark.usefixtures("airflow_db")

RUNNER = """
import json, os, sys
from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig

# Jobs complete at once: the sensor's first look finds the job done, so the run takes seconds.
with Simulator(SimulatorConfig(api_key=os.environ["KEY"], phases=(), output_size=2048)) as sim:
    os.environ["AIRFLOW_CONN_CHAMELAION_DEFAULT"] = sim.connection_json()
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=sys.argv[1])
    assert not bag.import_errors, bag.import_errors
    run = bag.get_dag("dub_episode").test()
    print("ANSWER " + json.dumps({"state": str(run.state), "jobs": len(sim.state.jobs), "ds": run.logical_date.strftime("%Y-%m-%d")}))
"""


def quickstart_code() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)[:1]
    return code


def test_quickstart_writes_to_a_local_path() -> None:
    assert 'destination="/tmp/dubs/{{ ds }}/ep42-ja.mp4"' in quickstart_code()


def test_quickstart_runs_as_written(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    # Only where the output lands moves, into this test's folder.
    (dags / "dub_episode.py").write_text(quickstart_code().replace("/tmp/dubs/", f"{tmp_path}/dubs/"))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(RUNNER), str(dags)],
        cwd=ROOT,
        env={
            **os.environ,
            "KEY": API_KEY,
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "PYTHONWARNINGS": "ignore",
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    [line] = [line for line in result.stdout.splitlines() if line.startswith("ANSWER ")]
    answer = json.loads(line.removeprefix("ANSWER "))
    assert answer["state"] == "success"
    assert answer["jobs"] == 1
    output = tmp_path / "dubs" / answer["ds"] / "ep42-ja.mp4"
    assert output.stat().st_size == 2048
