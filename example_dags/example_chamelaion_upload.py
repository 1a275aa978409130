"""Upload mode: send local (or object-storage) files instead of URLs, wait, download.

The first task stands in for whatever produces the media (a render, a TTS step, a copy from a bucket):
here it writes two small files. ``LipsyncGenerateOperator`` then streams them to
``generate-with-media`` (memory use does not grow with file size), waits in the triggerer and pushes
the finished request to XCom ``request``.
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

from airflow_provider_chamelaion.operators.lipsync import LipsyncDownloadOperator, LipsyncGenerateOperator

POLL_INTERVAL = float(os.environ.get("CHAMELAION_POLL_INTERVAL", "30"))
OUTPUT_DIR = os.environ.get("CHAMELAION_OUTPUT_DIR", "/tmp/chamelaion-outputs")
MEDIA_DIR = os.environ.get("CHAMELAION_MEDIA_DIR", "/tmp/chamelaion-media")
#: The run's day: its logical date, or the day it was triggered for a run that has none (on Airflow 3,
#: the UI's Trigger button and ``airflow dags trigger`` start runs without a logical date by default,
#: and ``{{ ds }}`` alone is then undefined).
DAY = "{{ ds if ds is defined else dag_run.run_after | ds }}"

with DAG(
    dag_id="chamelaion_upload",
    schedule=None,
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["chamelaion", "example"],
) as dag:

    @task
    def prepare_media(ds: str | None = None) -> dict[str, str]:
        folder = Path(MEDIA_DIR) / str(ds)
        folder.mkdir(parents=True, exist_ok=True)
        video, audio = folder / "promo.mp4", folder / "promo-ja.wav"
        video.write_bytes(os.urandom(512 * 1024))
        audio.write_bytes(os.urandom(64 * 1024))
        return {"video": str(video), "audio": str(audio)}

    media = prepare_media()

    # [START howto_operator_lipsync_generate_upload]
    upload = LipsyncGenerateOperator(
        task_id="upload",
        video_file="{{ ti.xcom_pull(task_ids='prepare_media')['video'] }}",
        audio_file="{{ ti.xcom_pull(task_ids='prepare_media')['audio'] }}",
        wait_for_completion=True,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )
    # [END howto_operator_lipsync_generate_upload]

    download = LipsyncDownloadOperator(
        task_id="download",
        request_id=upload.output,
        destination=f"{OUTPUT_DIR}/upload/{DAY}-promo-ja.mp4",
    )

    media >> upload >> download
