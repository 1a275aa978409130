"""Run in a fresh interpreter by tests/integration/test_load_with_faults.py: the load DAG in one
``dag.test()``, on a metadata database of its own.

Usage: ``python load_child.py DAG_FILE``, with ``AIRFLOW_HOME`` a fresh folder, the DAGs folder and
``AIRFLOW_CONN_CHAMELAION_DEFAULT`` set. Its own database because the run writes thousands of rows: in
the suite's shared SQLite database, after the other integration tests' runs, Airflow 3.0 and 3.3 found
it malformed and 3.1 and 3.2 took ten times as long (measured on the compatibility legs). Answers
(``tests.harness.processes``) with one line on stdout::

    ANSWER {"state": ..., "runtime_s": ..., "states": {...}, "tries": {...}, "map_indexes": [...]}
"""

from __future__ import annotations

import collections
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path


def main(dag_file: Path) -> None:
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)

    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    # Imported from its file, as dag.test() finds it: the DAGs folder is not on sys.path.
    spec = importlib.util.spec_from_file_location("chamelaion_load_with_faults_dag", dag_file)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    started = time.monotonic()
    run = module.dag.test()
    runtime = time.monotonic() - started
    with create_session() as session:
        tis = (
            session.query(TaskInstance)
            .filter(TaskInstance.dag_id == module.dag.dag_id, TaskInstance.run_id == run.run_id)
            .all()
        )
        report = {
            "state": str(run.state),
            "tasks": module.TASKS,
            "runtime_s": round(runtime, 1),
            "states": dict(collections.Counter(str(ti.state) for ti in tis)),
            "tries": dict(collections.Counter(str(ti.try_number) for ti in tis)),
            "map_indexes": sorted(ti.map_index for ti in tis),
        }
    print("ANSWER " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
