"""Airflow names only the tests use, from wherever this Airflow line keeps them (newest path first).

The provider's own names come from ``airflow_provider_chamelaion.version_compat``; these are for running
DAGs and operators in tests: ``DagBag`` (3.3 moved it to the DAG processor) and ``TaskDeferred`` (not in
``airflow.sdk.exceptions`` before 3.2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_chamelaion.version_compat import import_first

if TYPE_CHECKING:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.exceptions import TaskDeferred
else:
    TaskDeferred = import_first("TaskDeferred", "airflow.sdk.exceptions", "airflow.exceptions")


def __getattr__(name: str) -> Any:
    if name == "DagBag":  # loads the DAG processor's modules: only when a test asks for it
        return import_first("DagBag", "airflow.dag_processing.dagbag", "airflow.models.dagbag")
    raise AttributeError(name)


__all__ = ["DagBag", "TaskDeferred"]
