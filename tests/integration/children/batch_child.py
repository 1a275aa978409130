"""Run in a fresh interpreter by tests/integration/test_batch_scale.py: submit a catalogue, to be killed.

Usage: ``python batch_child.py CATALOGUE MANIFEST``. The connection comes from
``AIRFLOW_CONN_CHAMELAION_DEFAULT``. Submits without waiting; the test kills this process (SIGKILL) in
the middle of the submissions, as a worker lost to the OOM killer or a node going away.
"""

from __future__ import annotations

import sys

from airflow_provider_chamelaion.operators.batch import LipsyncBatchGenerateOperator
from tests.harness.context import make_context


def main(catalogue: str, manifest: str) -> None:
    operator = LipsyncBatchGenerateOperator(
        task_id="backfill",
        catalogue=catalogue,
        manifest_path=manifest,
        wait_for_completion=False,
        submit_concurrency=4,
    )
    operator.execute(make_context())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
