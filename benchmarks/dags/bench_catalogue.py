"""The two catalogue-backfill patterns, for benchmarks/batch_deployment.py.

``bench_per_item``: one mapped task per item over the first ``BENCH_ITEMS`` items of the example
catalogue (submit-or-reuse and wait deferred, then download); ``bench_batch_file``: one batch task and
one batch download task over the catalogue file the run names. Reference ids differ between the two so
neither reuses the other's jobs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pendulum
from airflow import DAG

from airflow_provider_chamelaion.operators.batch import (
    LipsyncBatchDownloadOperator,
    LipsyncBatchGenerateOperator,
)
from airflow_provider_chamelaion.operators.lipsync import LipsyncDownloadOperator, LipsyncGenerateOperator

ITEMS = int(os.environ.get("BENCH_ITEMS", "200"))
POLL = float(os.environ.get("CHAMELAION_POLL_INTERVAL", "5"))
OUT = os.environ.get("CHAMELAION_OUTPUT_DIR", "/tmp/chamelaion-bench")
CATALOGUE = Path(__file__).resolve().parents[2] / "example_dags" / "data" / "catalogue.jsonl"


def items(prefix: str) -> list[dict[str, str]]:
    rows = [json.loads(line) for line in CATALOGUE.read_text().splitlines()[:ITEMS]]
    return [
        {
            "video_url": r["video_url"],
            "audio_url": r["audio_url"],
            "reference_id": f"{prefix}-{r['reference_id']}",
        }
        for r in rows
    ]


ARGS = {"schedule": None, "start_date": pendulum.datetime(2026, 11, 1, tz="UTC"), "catchup": False}

with DAG(dag_id="bench_per_item", **ARGS):  # type: ignore[arg-type]
    dub = LipsyncGenerateOperator.partial(
        task_id="dub",
        reuse_existing_request=True,
        wait_for_completion=True,
        deferrable=True,
        poll_interval=POLL,
    ).expand_kwargs(items("per-item"))
    LipsyncDownloadOperator.partial(task_id="download", destination=f"{OUT}/per-item/").expand(
        request_id=dub.output
    )

# The catalogue comes with each run (``conf["catalogue"]``: a JSON Lines path, on S3 in the scale
# benchmark), so one parsed DAG serves 1,000 and 10,000 items without 10,000 rows in the serialized DAG.
with DAG(dag_id="bench_batch_file", **ARGS):  # type: ignore[arg-type]
    batch_file = LipsyncBatchGenerateOperator(
        task_id="backfill",
        catalogue="{{ dag_run.conf['catalogue'] }}",
        manifest_path=OUT + "/manifests/{{ run_id }}.jsonl",
        poll_interval=POLL,
        submit_concurrency=8,
    )
    LipsyncBatchDownloadOperator(
        task_id="download", manifest_path=batch_file.output, destination=f"{OUT}/batch-file/", concurrency=8
    )

# The same batch, its outputs downloaded by the task that resumes from the wait (``download_to``): one task
# fewer to start.
with DAG(dag_id="bench_batch_one_task", **ARGS):  # type: ignore[arg-type]
    LipsyncBatchGenerateOperator(
        task_id="backfill",
        catalogue="{{ dag_run.conf['catalogue'] }}",
        manifest_path=OUT + "/manifests/one-task/{{ run_id }}.jsonl",
        poll_interval=POLL,
        submit_concurrency=8,
        download_to=f"{OUT}/batch-one-task/",
        download_concurrency=8,
    )
