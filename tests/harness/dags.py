"""Importing a DAG file in a test."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any


def load_dag_file(path: Path, module_name: str) -> ModuleType:
    """Import the DAG file at ``path`` afresh as ``module_name`` (not kept in ``sys.modules``), so it reads
    the environment the test just set."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def repair_airflow2_dag_test(monkeypatch: Any) -> None:
    """Work around an Airflow 2 ``dag.test()`` bug so mapped deferrable tasks can resume (2.x only).

    ``dag.test()`` on 2.11 runs a deferred task again on the same task instance, whose ``task`` the
    first run replaced with the unmapped operator; the resumed run then treats the mapped task as
    unmapped and fails with ``UnmappableXComTypePushed`` when a mapped task depends on its output
    (the catalogue DAG's ``download``). A scheduler-run task instance loads its task afresh, so real
    deployments are not affected; this puts the DAG's own (mapped) task back before each run.
    """
    from airflow_provider_chamelaion.version_compat import AIRFLOW_V_3_0_PLUS

    if AIRFLOW_V_3_0_PLUS:
        return
    from airflow.models.taskinstance import TaskInstance

    original = TaskInstance._run_raw_task

    def run_raw_task(self: Any, *args: Any, **kwargs: Any) -> Any:
        dag = getattr(self.task, "dag", None)
        if dag is not None and dag.has_task(self.task_id):
            self.task = dag.get_task(self.task_id)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TaskInstance, "_run_raw_task", run_raw_task)
