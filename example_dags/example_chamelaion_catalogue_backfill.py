"""Catalogue backfill: push a whole catalogue through lip sync, keyed by ``reference_id``.

Each title's ``reference_id`` is stable (no date in it) and ``reuse_existing_request=True``: re-running
the DAG, or a backfill over many dates, reuses every job that is queued, running or completed and
submits only what is missing or failed. Each task submits and waits in the triggerer (deferrable).
"""

from __future__ import annotations

import os

import pendulum

from airflow_provider_chamelaion.operators.lipsync import LipsyncDownloadOperator, LipsyncGenerateOperator
from airflow_provider_chamelaion.version_compat import DAG

POLL_INTERVAL = float(os.environ.get("CHAMELAION_POLL_INTERVAL", "30"))
OUTPUT_DIR = os.environ.get("CHAMELAION_OUTPUT_DIR", "/tmp/chamelaion-outputs")

CATALOGUE = [
    {"title": "the-lighthouse", "language": "fr"},
    {"title": "the-lighthouse", "language": "de"},
    {"title": "night-train", "language": "fr"},
]


def catalogue_jobs() -> list[dict[str, str]]:
    return [
        {
            "video_url": f"https://cdn.example.com/catalogue/{item['title']}.mp4",
            "audio_url": f"https://cdn.example.com/catalogue/{item['title']}-{item['language']}.wav",
            "reference_id": f"catalogue-{item['title']}-{item['language']}",
        }
        for item in CATALOGUE
    ]


with DAG(
    dag_id="chamelaion_catalogue_backfill",
    schedule=None,
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["chamelaion", "example"],
    default_args={"retries": 2, "retry_delay": pendulum.duration(seconds=10)},
) as dag:
    # [START howto_operator_lipsync_generate_reuse]
    dub = LipsyncGenerateOperator.partial(
        task_id="dub",
        reuse_existing_request=True,
        wait_for_completion=True,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        timeout=12 * 60 * 60,
    ).expand_kwargs(catalogue_jobs())
    # [END howto_operator_lipsync_generate_reuse]

    download = LipsyncDownloadOperator.partial(
        task_id="download", destination=f"{OUTPUT_DIR}/catalogue/"
    ).expand(request_id=dub.output)
