"""Uploads from and downloads to object storage (file:// URIs through ObjectStoragePath)."""

from __future__ import annotations

from pathlib import Path

import pytest
from requests_mock import Mocker

from airflow_provider_chamelaion.exceptions import (
    ChamelaionConfigError,
    ChamelaionTransportError,
)
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
from tests.harness.mock_api import (
    OUTPUT,
    REQUEST_ID,
    STORAGE_URL,
    UPLOAD_URL,
    _completed,
    _parse_multipart,
    _UploadCapture,
)
from tests.harness.s3 import S3Server


class TestObjectStorage:
    """``file://`` URIs go through Airflow's ObjectStoragePath, like s3:// or gs:// would."""

    def test_upload_from_object_storage_uris(
        self, hook: ChamelaionHook, requests_mock: Mocker, media_files: tuple[Path, Path]
    ) -> None:
        video, audio = media_files
        capture = _UploadCapture()
        requests_mock.post(UPLOAD_URL, json=capture)
        assert hook.generate_with_media(f"file://{video}", f"file://{audio}") == REQUEST_ID
        parts = _parse_multipart(capture.headers[0]["Content-Type"], capture.bodies[0])
        assert [p.get_filename() for p in parts] == ["episode 42.mp4", "dub.wav"]
        assert parts[0].get_payload(decode=True) == video.read_bytes()
        assert parts[1].get_payload(decode=True) == audio.read_bytes()
        assert capture.headers[0]["Content-Length"] == str(len(capture.bodies[0]))

    def test_missing_object_storage_file_named_before_any_call(
        self, hook: ChamelaionHook, requests_mock: Mocker, media_files: tuple[Path, Path], tmp_path: Path
    ) -> None:
        missing = (tmp_path / "missing.mp4").as_uri()
        with pytest.raises(ChamelaionConfigError, match="does not exist") as info:
            hook.generate_with_media(missing, media_files[1])
        assert "missing.mp4" in str(info.value)
        assert requests_mock.call_count == 0

    def test_download_to_object_storage_file(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        requests_mock.get(STORAGE_URL, content=OUTPUT, headers={"Content-Length": str(len(OUTPUT))})
        written = hook.download_output(_completed(), (tmp_path / "out.mp4").as_uri())
        assert str(written) == (tmp_path / "out.mp4").as_uri()
        assert (tmp_path / "out.mp4").read_bytes() == OUTPUT
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]

    def test_download_to_existing_object_storage_directory(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        requests_mock.get(STORAGE_URL, content=OUTPUT)
        written = hook.download_output(_completed(), tmp_path.as_uri())
        assert str(written) == (tmp_path / "6f82a2d8.mp4").as_uri()
        assert (tmp_path / "6f82a2d8.mp4").read_bytes() == OUTPUT

    def test_object_storage_size_mismatch_leaves_nothing(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        requests_mock.get(STORAGE_URL, content=OUTPUT[:7], headers={"Content-Length": str(len(OUTPUT))})
        with pytest.raises(ChamelaionTransportError, match="download ended after 7 of"):
            hook.download_output(_completed(), (tmp_path / "out.mp4").as_uri())
        assert list(tmp_path.iterdir()) == []

    def test_download_to_new_object_storage_directory(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        requests_mock.get(STORAGE_URL, content=OUTPUT)
        written = hook.download_output(_completed(), (tmp_path / "new").as_uri() + "/")
        assert str(written) == (tmp_path / "new" / "6f82a2d8.mp4").as_uri()
        assert (tmp_path / "new" / "6f82a2d8.mp4").read_bytes() == OUTPUT


class TestS3:
    """On S3 (moto's server) an output is put once, whole: no temporary key, no copy, no delete."""

    def test_a_download_is_one_put_of_the_whole_output(
        self, hook: ChamelaionHook, requests_mock: Mocker, s3_server: S3Server
    ) -> None:
        bucket = s3_server.new_bucket()
        requests_mock.get(STORAGE_URL, content=OUTPUT, headers={"Content-Length": str(len(OUTPUT))})
        before = len(s3_server.requests)

        written = hook.download_output(_completed(), f"s3://{bucket}/dubs/ep42.mp4")
        served = s3_server.requests[before:]

        assert str(written) == f"s3://{bucket}/dubs/ep42.mp4"
        assert s3_server.fs().find(bucket) == [f"{bucket}/dubs/ep42.mp4"]
        assert s3_server.fs().cat(f"{bucket}/dubs/ep42.mp4") == OUTPUT
        # Is the destination a directory? Then one put: no temporary key, copy or delete, no look-up after.
        assert served == [
            ("GET", f"/{bucket}?list-type=2&prefix=dubs/ep42.mp4/&delimiter=/&encoding-type=url"),
            ("PUT", f"/{bucket}/dubs/ep42.mp4"),
        ]

    def test_a_short_download_puts_nothing(
        self, hook: ChamelaionHook, requests_mock: Mocker, s3_server: S3Server
    ) -> None:
        bucket = s3_server.new_bucket()
        requests_mock.get(STORAGE_URL, content=OUTPUT[:7], headers={"Content-Length": str(len(OUTPUT))})
        before = len(s3_server.requests)

        with pytest.raises(ChamelaionTransportError, match="download ended after 7 of"):
            hook.download_output(_completed(), f"s3://{bucket}/dubs/ep42.mp4")

        assert s3_server.fs().find(bucket) == []
        assert [verb for verb, _ in s3_server.requests[before:] if verb in ("PUT", "POST", "DELETE")] == []
