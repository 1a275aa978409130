"""Catalogue backfill: push a whole catalogue through lip sync in a few tasks, keyed by ``reference_id``.

The catalogue (``data/catalogue.jsonl``: 2,000 (title, language) items) is split into chunk files, and
each chunk is one ``LipsyncBatchGenerateOperator`` task: it validates every item before any call, finds
the jobs already paid for with a few listing pages, submits only what is missing or failed, and waits
for the whole chunk in one trigger. ``LipsyncBatchDownloadOperator`` then downloads every completed
output once. Each title's ``reference_id`` is stable (no date in it), so re-running the DAG, or retrying
a task, reuses every job that is queued, running or completed and submits only what is missing or failed.

In production put ``CHAMELAION_WORK_DIR`` and ``CHAMELAION_OUTPUT_DIR`` on object storage both workers and
the triggerer reach (e.g. ``s3://bucket/backfills``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow import DAG

try:  # Airflow 3
    from airflow.sdk import task
except ImportError:  # Airflow 2
    from airflow.decorators import task

from airflow_provider_chamelaion.batch.catalogue import split_catalogue
from airflow_provider_chamelaion.operators.batch import (
    LipsyncBatchDownloadOperator,
    LipsyncBatchGenerateOperator,
)

POLL_INTERVAL = float(os.environ.get("CHAMELAION_POLL_INTERVAL", "30"))
OUTPUT_DIR = os.environ.get("CHAMELAION_OUTPUT_DIR", "/tmp/chamelaion-outputs")
WORK_DIR = os.environ.get("CHAMELAION_WORK_DIR", "/tmp/chamelaion-backfill")
#: The catalogue: local or object storage (``s3://bucket/catalogue.jsonl``), JSON Lines or CSV.
CATALOGUE = (
    os.environ.get("CHAMELAION_CATALOGUE") or Path(__file__).resolve().parent / "data" / "catalogue.jsonl"
)
#: Items per batch task: 100,000 items would be 20 tasks, far below [core] max_map_length.
CHUNK_SIZE = int(os.environ.get("CHAMELAION_CHUNK_SIZE", "1000"))

with DAG(
    dag_id="chamelaion_catalogue_backfill",
    schedule=None,
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["chamelaion", "example"],
    default_args={"retries": 2, "retry_delay": pendulum.duration(seconds=10)},
) as dag:
    # [START howto_catalogue_split]
    @task
    def chunks(run_id: str | None = None) -> list[str]:
        """Validate the whole catalogue (one error naming every bad row), then write it as chunk files."""
        return split_catalogue(str(CATALOGUE), f"{WORK_DIR}/{run_id}/chunks", chunk_size=CHUNK_SIZE)

    # [END howto_catalogue_split]

    # [START howto_operator_lipsync_batch_generate]
    backfill = LipsyncBatchGenerateOperator.partial(
        task_id="backfill",
        manifest_path=WORK_DIR + "/{{ run_id }}/manifest-{{ ti.map_index }}.jsonl",
        submit_concurrency=8,
        poll_interval=POLL_INTERVAL,
        timeout=12 * 60 * 60,
    ).expand(catalogue=chunks())
    # [END howto_operator_lipsync_batch_generate]

    # [START howto_operator_lipsync_batch_download]
    download = LipsyncBatchDownloadOperator.partial(
        task_id="download", destination=f"{OUTPUT_DIR}/catalogue/", concurrency=8
    ).expand(manifest_path=backfill.output)
    # [END howto_operator_lipsync_batch_download]
