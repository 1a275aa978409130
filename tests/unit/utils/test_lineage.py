"""Dataset naming of each kind of input and output, as the OpenLineage provider's extractor reads it.

``DefaultExtractor`` is what the OpenLineage listener uses for any operator with
``get_openlineage_facets_on_complete``; the end-to-end events are in tests/integration/test_openlineage.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.providers.openlineage.extractors.base import DefaultExtractor

from airflow_provider_chamelaion.operators.lipsync import LipsyncDownloadOperator, LipsyncGenerateOperator
from airflow_provider_chamelaion.simulator import Simulator
from tests.harness.context import make_context


def names(datasets: list[Any]) -> list[tuple[str, str]]:
    return [(dataset.namespace, dataset.name) for dataset in datasets]


def test_upload_mode_reports_local_and_file_uri_sources_and_the_job(
    simulator: Simulator, tmp_path: Path
) -> None:
    video, audio = tmp_path / "ep 42.mp4", tmp_path / "ep42-ja.wav"
    video.write_bytes(b"v" * 2048)
    audio.write_bytes(b"a" * 1024)
    operator = LipsyncGenerateOperator(task_id="upload", video_file=str(video), audio_file=audio.as_uri())
    request_id = operator.execute(make_context(task_id="upload"))

    lineage = DefaultExtractor(operator).extract_on_complete(None)

    assert lineage is not None
    assert names(lineage.inputs) == [("file", str(video)), ("file", str(audio))]
    assert names(lineage.outputs) == [(simulator.origin, f"/api/v1/lipsync/requests/{request_id}")]
    assert lineage.run_facets["externalQuery"].externalQueryId == request_id


def test_download_by_reference_id_reports_the_job_by_its_id(simulator: Simulator, tmp_path: Path) -> None:
    generate = LipsyncGenerateOperator(
        task_id="submit",
        video_url="https://cdn.test/v.mp4",
        audio_url="https://cdn.test/a.wav",
        reference_id="ep42-ja",
    )
    request_id = generate.execute(make_context(task_id="submit"))
    simulator.state.force_status(request_id, "completed")
    download = LipsyncDownloadOperator(task_id="download", request_id="ep42-ja", destination=f"{tmp_path}/")
    written = download.execute(make_context(task_id="download"))

    lineage = DefaultExtractor(download).extract_on_complete(None)

    assert lineage is not None
    assert names(lineage.inputs) == [(simulator.origin, f"/api/v1/lipsync/requests/{request_id}")]
    assert names(lineage.outputs) == [("file", written)]
    assert Path(written).parent == tmp_path


def test_url_inputs_are_named_by_host_and_port_without_user_info(simulator: Simulator) -> None:
    operator = LipsyncGenerateOperator(
        task_id="submit",
        video_url="https://editor:hunter2@CDN.example.com:8443/ep42.mp4?X-Amz-Signature=s3cr3t",
        audio_url="http://uploader@cdn.example.com/ep42-ja.wav",
        reference_id="ep42-ja",
    )
    request_id = operator.execute(make_context(task_id="submit"))

    lineage = DefaultExtractor(operator).extract_on_complete(None)

    assert lineage is not None
    assert names(lineage.inputs) == [
        ("https://CDN.example.com:8443", "/ep42.mp4"),
        ("http://cdn.example.com", "/ep42-ja.wav"),
    ]
    assert names(lineage.outputs) == [(simulator.origin, f"/api/v1/lipsync/requests/{request_id}")]
