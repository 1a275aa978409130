"""OpenLineage: what the OpenLineage provider itself emits for a DAG using the operators.

The DAG runs with ``dag.test()`` in a fresh interpreter with the OpenLineage provider's listener on and
its **file transport** (the console transport's twin that writes JSON lines): the test reads the run
events the provider emitted, so it checks our facets as OpenLineage consumers will see them, not our
own objects. A fresh interpreter, because the provider caches its configuration per process.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.harness.constants import API_KEY, ROOT
from tests.harness.processes import answer, run_python

pytestmark = pytest.mark.usefixtures("airflow_db")

DAG_SCRIPT = """
import json, os, sys
import pendulum
from airflow import DAG  # as users write it on every line (2.11 has no airflow.sdk)
from airflow_provider_chamelaion.operators.lipsync import LipsyncDownloadOperator, LipsyncGenerateOperator

with DAG("chamelaion_lineage", schedule=None, start_date=pendulum.datetime(2026, 11, 1, tz="UTC")) as dag:
    submit = LipsyncGenerateOperator(
        task_id="submit",
        video_url="https://cdn.example.com/episodes/42.mp4?token=abc",
        audio_url="https://cdn.example.com/dubs/42-ja.wav",
        reference_id="ep42-ja-{{ ds }}",
        wait_for_completion=True,
        deferrable=True,  # lineage after resuming from the trigger: a fresh operator, only the event
        poll_interval=0.1,
    )
    submit >> LipsyncDownloadOperator(task_id="download", request_id=submit.output, destination=os.environ["OUT"])

if __name__ == "__main__":
    from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig

    config = SimulatorConfig(api_key=os.environ["KEY"], phases=(("queued", 0.2), ("running", 0.2)), output_size=4096)
    with Simulator(config) as sim:
        os.environ["AIRFLOW_CONN_CHAMELAION_DEFAULT"] = sim.connection_json()
        run = dag.test()
        print("ANSWER " + json.dumps({"state": str(run.state), "origin": sim.origin, "jobs": list(sim.state.jobs)}))
"""


def run_script(script: str, args: list[str], env: dict[str, str], folder: Path) -> dict[str, Any]:
    """Run ``script`` as a file (``dag.test()`` needs a DAG file it can serialize) in a fresh interpreter."""
    path = folder / "script_dag.py"
    path.write_text(textwrap.dedent(script))
    result = run_python(
        str(path),
        *args,
        env={**os.environ, "KEY": API_KEY, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT), **env},
        timeout=300,
    )
    answered: dict[str, Any] = answer(result)
    return answered


def complete_events(events_file: Path) -> dict[str, dict[str, Any]]:
    """The COMPLETE run event of each task, by task id (what a lineage backend stores)."""
    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    return {
        event["job"]["name"].rsplit(".", 1)[-1]: event
        for event in events
        if event["eventType"] == "COMPLETE" and "." in event["job"]["name"]
    }


def datasets(event: dict[str, Any], side: str) -> list[tuple[str, str]]:
    return [(dataset["namespace"], dataset["name"]) for dataset in event[side]]


def test_lineage_events_name_media_job_and_output(tmp_path: Path) -> None:
    events_file = tmp_path / "openlineage.jsonl"
    out = tmp_path / "dubs" / "ep42-ja.mp4"
    transport = {"type": "file", "log_file_path": str(events_file), "append": True}
    env = {
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "dubbing",
        "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path),  # dag.test() serializes the DAG from its folder
        "OUT": str(out),
    }
    answer = run_script(DAG_SCRIPT, [], env, tmp_path)
    assert answer["state"] == "success"
    [request_id] = answer["jobs"]
    job = (answer["origin"], f"/api/v1/lipsync/requests/{request_id}")

    by_task = complete_events(events_file)
    submit, download = by_task["submit"], by_task["download"]
    assert datasets(submit, "inputs") == [
        ("https://cdn.example.com", "/episodes/42.mp4"),  # the query string (a token) is not reported
        ("https://cdn.example.com", "/dubs/42-ja.wav"),
    ]
    assert datasets(submit, "outputs") == [job]
    assert datasets(download, "inputs") == [job]
    assert datasets(download, "outputs") == [("file", str(out))]
    for event in (submit, download):
        assert event["run"]["facets"]["externalQuery"]["externalQueryId"] == request_id
        assert event["run"]["facets"]["externalQuery"]["source"] == "chamelaion"
    assert API_KEY not in events_file.read_text()
    assert "token=abc" not in events_file.read_text()


WITHOUT_OPENLINEAGE = """
import importlib.abc, json, os, sys

class RefuseOpenLineage(importlib.abc.MetaPathFinder):
    # Behaves as if apache-airflow-providers-openlineage (and the openlineage client) were not installed.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "openlineage" or name.startswith("airflow.providers.openlineage"):
            raise ModuleNotFoundError(name)
        return None

sys.meta_path.insert(0, RefuseOpenLineage())

# ...and Airflow's provider discovery must not find its distribution either.
import importlib_metadata
_distributions = importlib_metadata.distributions
importlib_metadata.distributions = lambda **kw: (
    d for d in _distributions(**kw) if "openlineage" not in (d.metadata["Name"] or "")
)
from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig
from airflow_provider_chamelaion.operators.lipsync import LipsyncDownloadOperator, LipsyncGenerateOperator
from tests.harness.context import make_context

config = SimulatorConfig(api_key=os.environ["KEY"], phases=(), output_size=1024)
with Simulator(config) as sim:
    os.environ["AIRFLOW_CONN_CHAMELAION_DEFAULT"] = sim.connection_json()
    request_id = LipsyncGenerateOperator(
        task_id="submit", video_url="https://cdn.test/v.mp4", audio_url="https://cdn.test/a.wav",
        wait_for_completion=True, deferrable=False, poll_interval=0.05,
    ).execute(make_context())
    written = LipsyncDownloadOperator(
        task_id="download", request_id=request_id, destination=sys.argv[1]
    ).execute(make_context(task_id="download"))
loaded = sorted(m for m in sys.modules if "openlineage" in m or m == "airflow_provider_chamelaion.utils.lineage")
print("ANSWER " + json.dumps({"written": written, "loaded": loaded}))
"""


def test_without_the_openlineage_provider_nothing_changes_and_nothing_is_imported(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    answer = run_script(WITHOUT_OPENLINEAGE, [str(out)], {}, tmp_path)
    assert answer == {"written": str(out), "loaded": []}
    assert out.stat().st_size == 1024
