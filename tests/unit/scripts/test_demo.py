"""``make demo``'s summary of the DAG run: whole ids and figures, however long the line."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from tests.harness.constants import ROOT


def demo_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_script", ROOT / "scripts" / "demo.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


JOB = "2560e06b-52f6-47bf-a9d9-2a88e1c913f7"


def test_long_lines_keep_whole_ids_and_figures() -> None:
    demo = demo_module()
    line = (
        f"2026-12-04T23:51:58.1Z [info     ] Downloaded output of {JOB} to {ROOT}/.demo/outputs/"
        "ep41-es-2026-12-04.mp4: 185.2 MiB in 2.4 s (77.2 MiB/s) [airflow.task.hooks.ChamelaionHook] "
        "loc=chamelaion.py:512"
    )
    assert demo.summarize(line) == (
        f"Downloaded output of {JOB} to .demo/outputs/ep41-es-2026-12-04.mp4: 185.2 MiB in 2.4 s (77.2 MiB/s)"
    )


def test_the_run_summary_keeps_the_run_id_state_and_duration() -> None:
    demo = demo_module()
    run_id = "manual__2026-12-04T23:52:34.615889+00:00"
    line = (
        "2026-12-04T23:52:48.769610Z [info     ] DagRun Finished: dag_id=chamelaion_nightly_localization, "
        f"logical_date=2026-12-04 23:52:33.968272+00:00, run_id={run_id}, run_start_date=2026-12-04 "
        "23:52:33.968272+00:00, run_end_date=2026-12-04 23:52:48.769542+00:00, run_duration=14.80127, "
        "state=success, run_type=manual, data_interval_start=2026-12-04 23:52:33.968272+00:00, "
        "data_interval_end=2026-12-04 23:52:33.968272+00:00, [airflow.models.dagrun.DagRun] loc=dagrun.py:1315"
    )
    assert demo.summarize(line) == f"DAG run {run_id} finished: success in 14.80127 s"
