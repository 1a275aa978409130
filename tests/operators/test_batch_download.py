"""LipsyncBatchDownloadOperator: every completed output once, named from the manifest, refreshed when expired."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_chamelaion.exceptions import ChamelaionConfigError
from airflow_provider_chamelaion.manifest import read_manifest, write_manifest
from airflow_provider_chamelaion.operators.batch import LipsyncBatchDownloadOperator
from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig
from tests.conftest import API_KEY, idle
from tests.helpers.batch import run_batch
from tests.helpers.context import make_context
from tests.helpers.s3 import S3Server
from tests.operators.test_batch import items, make_batch

OUTPUT_SIZE = 3000


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return SimulatorConfig(
        api_key=API_KEY, phases=(("queued", 0.1), ("running", 0.1)), output_size=OUTPUT_SIZE
    )


@pytest.fixture
def finished_batch(simulator: Simulator, tmp_path: Path) -> dict[str, Any]:
    """A batch of six, one failed; its summary."""
    simulator.state.fail_next(1)
    run = run_batch(make_batch(tmp_path, items(6), max_failure_rate=0.5), make_context())
    assert run.error is None, run.error
    assert run.summary is not None
    return run.summary


def downloader(destination: Any, manifest: Any, **kwargs: Any) -> LipsyncBatchDownloadOperator:
    return LipsyncBatchDownloadOperator(
        task_id="download", manifest_path=manifest, destination=destination, **kwargs
    )


def output_gets(simulator: Simulator) -> int:
    return len(idle(simulator).state.calls_to("GET", "^/outputs/"))


def test_downloads_every_completed_output_named_by_reference_id(
    simulator: Simulator, tmp_path: Path, finished_batch: dict[str, Any]
) -> None:
    out = tmp_path / "outputs"

    result = downloader(str(out), finished_batch, concurrency=3).execute(make_context())

    assert result == {"destination": str(out), "total": 5, "downloaded": 5, "skipped": 0}
    completed = [
        row.reference_id
        for row in read_manifest(finished_batch["manifest_path"])
        if row.status == "completed"
    ]
    assert len(completed) == 5
    assert sorted(path.name for path in out.iterdir()) == sorted(f"{ref}.mp4" for ref in completed)
    assert {path.stat().st_size for path in out.iterdir()} == {OUTPUT_SIZE}
    assert output_gets(simulator) == 5


def test_a_rerun_downloads_nothing_twice_but_replaces_an_empty_file(
    simulator: Simulator, tmp_path: Path, finished_batch: dict[str, Any]
) -> None:
    out = tmp_path / "outputs"
    downloader(str(out), finished_batch).execute(make_context())
    emptied = next(out.iterdir())
    emptied.write_bytes(b"")  # not an output this operator wrote
    before = output_gets(simulator)

    result = downloader(str(out), finished_batch).execute(make_context())

    assert result["downloaded"] == 1
    assert result["skipped"] == 4
    assert output_gets(simulator) - before == 1
    assert emptied.stat().st_size == OUTPUT_SIZE


def test_an_expired_output_url_is_refreshed(
    simulator: Simulator, tmp_path: Path, finished_batch: dict[str, Any]
) -> None:
    location = finished_batch["manifest_path"]
    rows = read_manifest(location)
    for row in rows:
        if row.output_url:
            row.output_url = row.output_url.replace("sig=", "sig=0")  # refused with 403, like an expired URL
    write_manifest(location, rows)
    out = tmp_path / "outputs"

    result = downloader(str(out), location).execute(make_context())

    assert result["downloaded"] == 5
    assert len(simulator.state.calls_to("GET", r"/requests/[^/]+$")) == 5  # one refresh each
    assert {path.stat().st_size for path in out.iterdir()} == {OUTPUT_SIZE}


def test_a_filename_template_and_object_storage(
    simulator: Simulator, tmp_path: Path, finished_batch: dict[str, Any]
) -> None:
    destination = f"file://{tmp_path}/bucket/dubs/"

    result = downloader(
        destination, finished_batch, filename_template="{reference_id}/{request_id}.mp4"
    ).execute(make_context())

    assert result["downloaded"] == 5
    files = sorted((tmp_path / "bucket" / "dubs").rglob("*.mp4"))
    completed = {
        row.reference_id: row.request_id
        for row in read_manifest(finished_batch["manifest_path"])
        if row.status == "completed"
    }
    assert sorted((path.parent.name, path.stem) for path in files) == sorted(completed.items())
    assert not list((tmp_path / "bucket").rglob("*.part")), "no temporary file left behind"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{title}.mp4", "cannot be filled"),
        ("dub.mp4", "for both"),
        ("../{reference_id}.mp4", "relative path inside destination"),
    ],
)
def test_a_bad_filename_template_fails_before_any_download(
    simulator: Simulator, tmp_path: Path, finished_batch: dict[str, Any], template: str, message: str
) -> None:
    with pytest.raises(ChamelaionConfigError, match=message):
        downloader(str(tmp_path / "o"), finished_batch, filename_template=template).execute(make_context())
    assert output_gets(simulator) == 0


def test_on_s3_the_destination_is_listed_once_and_each_output_put_once(
    simulator: Simulator, finished_batch: dict[str, Any], s3_server: S3Server
) -> None:
    bucket = s3_server.new_bucket()
    completed = sorted(
        row.reference_id
        for row in read_manifest(finished_batch["manifest_path"])
        if row.status == "completed"
    )
    s3_server.fs().pipe(f"{bucket}/dubs/{completed[0]}.mp4", b"x" * OUTPUT_SIZE)  # from an earlier run
    before = len(s3_server.requests)

    result = downloader(f"s3://{bucket}/dubs", finished_batch, concurrency=3).execute(make_context())
    served = s3_server.requests[before:]

    assert result == {"destination": f"s3://{bucket}/dubs", "total": 5, "downloaded": 4, "skipped": 1}
    assert sorted(s3_server.fs().find(bucket)) == [f"{bucket}/dubs/{ref}.mp4" for ref in completed]
    assert len([path for verb, path in served if verb == "GET" and "list-type=2" in path]) == 1
    assert sorted(path for verb, path in served if verb in ("PUT", "POST", "DELETE")) == [
        f"/{bucket}/dubs/{ref}.mp4" for ref in completed[1:]
    ]
    assert output_gets(simulator) == 4
