"""Load under faults: many mapped deferrable LipsyncGenerateOperator tasks in one DAG run.

Used by ``tests/integration/test_load_with_faults.py`` (which points the dags folder here so ``dag.test()`` can find
the file). ``CHAMELAION_LOAD_TASKS`` (default 200) sets how many mapped tasks there are and
``CHAMELAION_POLL_INTERVAL`` how often each wait polls. No ``reference_id`` is given: each task uses
the one derived from its task instance and inputs (``airflow-<dag>.<task>-<digest>``), unique per task.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow import DAG

from airflow_provider_chamelaion.operators.lipsync import LipsyncGenerateOperator

TASKS = int(os.environ.get("CHAMELAION_LOAD_TASKS", "200"))
POLL_INTERVAL = float(os.environ.get("CHAMELAION_POLL_INTERVAL", "0.2"))

with DAG(
    dag_id="chamelaion_load_with_faults",
    schedule=None,
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["chamelaion", "test"],
    default_args={"retries": 3, "retry_delay": timedelta(seconds=1)},
) as dag:
    LipsyncGenerateOperator.partial(
        task_id="generate",
        video_url="https://media.test/load/video.mp4",
        wait_for_completion=True,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        timeout=timedelta(minutes=10),
    ).expand(audio_url=[f"https://media.test/load/audio-{index:03d}.wav" for index in range(TASKS)])
