"""Nightly localization: dub each (episode, language) of the day, wait in the triggerer, download.

Three mapped tasks, one item per (episode, language):

* ``submit`` starts a lip-sync job with a deterministic ``reference_id`` (``ep42-ja-<day>``, the run's
  logical date, or the day it was triggered for a run without one); a retry or clear of a task reuses
  its job instead of paying again;
* ``wait`` defers to the triggerer until the job has finished: a thousand waits cost no worker slot;
* ``download`` streams each output to ``$CHAMELAION_OUTPUT_DIR`` (atomically: no partial files).

``CHAMELAION_POLL_INTERVAL`` (seconds, default 30) is read so that the demo and tests can poll fast.
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow import DAG

from airflow_provider_chamelaion.operators.lipsync import LipsyncDownloadOperator, LipsyncGenerateOperator
from airflow_provider_chamelaion.sensors.lipsync import LipsyncRequestSensor

POLL_INTERVAL = float(os.environ.get("CHAMELAION_POLL_INTERVAL", "30"))
OUTPUT_DIR = os.environ.get("CHAMELAION_OUTPUT_DIR", "/tmp/chamelaion-outputs")
#: The run's day: its logical date, or the day it was triggered for a run that has none (on Airflow 3,
#: the UI's Trigger button and ``airflow dags trigger`` start runs without a logical date by default,
#: and ``{{ ds }}`` alone is then undefined).
DAY = "{{ ds if ds is defined else dag_run.run_after | ds }}"

# A small inline catalogue; in production this would come from a CMS or a table.
EPISODES = {
    "ep41": "https://cdn.example.com/episodes/41.mp4",
    "ep42": "https://cdn.example.com/episodes/42.mp4",
}
LANGUAGES = ["ja", "es"]


def localization_jobs() -> list[dict[str, str]]:
    """One submission per (episode, language); ``DAY`` is rendered by Airflow for each."""
    return [
        {
            "video_url": video_url,
            "audio_url": f"https://cdn.example.com/dubs/{episode}-{language}.wav",
            "reference_id": f"{episode}-{language}-{DAY}",
        }
        for episode, video_url in EPISODES.items()
        for language in LANGUAGES
    ]


def download_args(request: dict[str, Any]) -> dict[str, str]:
    """Name each output after its reference_id: ``<dir>/ep42-ja-2026-11-25.mp4``."""
    return {"request_id": request["id"], "destination": f"{OUTPUT_DIR}/{request['reference_id']}.mp4"}


with DAG(
    dag_id="chamelaion_nightly_localization",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["chamelaion", "example"],
    default_args={"retries": 2, "retry_delay": pendulum.duration(seconds=10)},
) as dag:
    # [START howto_operator_lipsync_generate_mapped]
    submit = LipsyncGenerateOperator.partial(
        task_id="submit",
        chamelaion_conn_id="chamelaion_default",
    ).expand_kwargs(localization_jobs())
    # [END howto_operator_lipsync_generate_mapped]

    # [START howto_sensor_lipsync_request_deferrable]
    wait = LipsyncRequestSensor.partial(
        task_id="wait",
        deferrable=True,
        poke_interval=POLL_INTERVAL,
        timeout=6 * 60 * 60,
    ).expand(request_id=submit.output)
    # [END howto_sensor_lipsync_request_deferrable]

    # [START howto_operator_lipsync_download]
    download = LipsyncDownloadOperator.partial(task_id="download").expand_kwargs(
        wait.output.map(download_args)
    )
    # [END howto_operator_lipsync_download]
