"""Assets: a downstream DAG runs when a new dubbed episode lands.

Two DAGs:

* ``chamelaion_dub_episode`` submits a lip-sync job, waits for it in the triggerer and downloads the
  output with ``asset=DUBBED_EPISODES``: each download records an asset event whose ``extra`` holds the
  ``path`` written and the ``request_id``;
* ``chamelaion_publish_dubbed_episode`` is scheduled on ``DUBBED_EPISODES``: Airflow runs it after every
  new episode, and its task reads which file landed from the asset event.

On Airflow 2.x, ``Asset`` is ``airflow.datasets.Dataset`` (imported under that name below) and
``inlet_events`` works the same way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pendulum
from airflow import DAG

try:  # Airflow 3
    from airflow.sdk import Asset, task
except ImportError:  # Airflow 2 calls assets datasets
    from airflow.datasets import Dataset as Asset
    from airflow.decorators import task

from airflow_provider_chamelaion.operators.lipsync import LipsyncDownloadOperator, LipsyncGenerateOperator

POLL_INTERVAL = float(os.environ.get("CHAMELAION_POLL_INTERVAL", "30"))
OUTPUT_DIR = os.environ.get("CHAMELAION_OUTPUT_DIR", "/tmp/chamelaion-outputs")
#: The run's day: its logical date, or the day it was triggered for a run that has none (on Airflow 3,
#: the UI's Trigger button and ``airflow dags trigger`` start runs without a logical date by default,
#: and ``{{ ds }}`` alone is then undefined).
DAY = "{{ ds if ds is defined else dag_run.run_after | ds }}"

# [START howto_asset_lipsync_download]
# One asset for the stream of episodes: the destination is templated (a new file every run), so the
# asset is named for what it means; each event's extra says which file landed.
DUBBED_EPISODES = Asset("chamelaion_dubbed_episodes")

with DAG(
    dag_id="chamelaion_dub_episode",
    schedule=None,
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["chamelaion", "example"],
) as producer:
    submit = LipsyncGenerateOperator(
        task_id="submit",
        video_url="https://cdn.example.com/episodes/42.mp4",
        audio_url="https://cdn.example.com/dubs/42-ja.wav",
        reference_id=f"ep42-ja-{DAY}",
        wait_for_completion=True,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )
    LipsyncDownloadOperator(
        task_id="download",
        request_id=submit.output,
        destination=f"{OUTPUT_DIR}/dubbed/ep42-ja-{DAY}.mp4",
        asset=DUBBED_EPISODES,
    )
# [END howto_asset_lipsync_download]

# [START howto_asset_lipsync_consumer]
with DAG(
    dag_id="chamelaion_publish_dubbed_episode",
    schedule=[DUBBED_EPISODES],
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["chamelaion", "example"],
) as consumer:

    @task(inlets=[DUBBED_EPISODES])
    def publish(*, inlet_events: Any = None) -> dict[str, Any]:
        """Stands in for publishing: finds the newest episode from its asset event and checks the file."""
        latest = inlet_events[DUBBED_EPISODES][-1]
        path = Path(latest.extra["path"])
        return {"path": str(path), "request_id": latest.extra["request_id"], "size": path.stat().st_size}

    publish()
# [END howto_asset_lipsync_consumer]
