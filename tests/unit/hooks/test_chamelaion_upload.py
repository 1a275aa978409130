"""ChamelaionHook.generate_with_media: the streamed multipart upload."""

from __future__ import annotations

import io
import mimetypes
from pathlib import Path
from typing import Any

import pytest
from requests_mock import Mocker

from airflow_provider_chamelaion.client.multipart import MultipartBody
from airflow_provider_chamelaion.exceptions import (
    ChamelaionConfigError,
    ChamelaionServerError,
    ChamelaionValidationError,
)
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
from tests.harness.constants import API_KEY
from tests.harness.mock_api import REQUEST_ID, UPLOAD_URL, _last, _parse_multipart, _UploadCapture


class TestGenerateWithMedia:
    def test_streamed_multipart_with_content_length(
        self, hook: ChamelaionHook, requests_mock: Mocker, media_files: tuple[Path, Path]
    ) -> None:
        video, audio = media_files
        capture = _UploadCapture()
        requests_mock.post(UPLOAD_URL, json=capture)
        assert hook.generate_with_media(video, audio) == REQUEST_ID

        assert requests_mock.call_count == 1
        sent = _last(requests_mock)
        assert sent.method == "POST"
        assert sent.url == UPLOAD_URL
        assert sent.headers["x-api-key"] == API_KEY
        # Streamed: requests got the hook's iterator, not a body built in memory.
        assert capture.body_types == [MultipartBody]
        assert not isinstance(sent.body, (bytes, bytearray, str))
        headers = capture.headers[0]
        body = capture.bodies[0]
        assert headers["Content-Length"] == str(len(body))
        assert "Transfer-Encoding" not in headers
        content_type = headers["Content-Type"]
        assert content_type.startswith("multipart/form-data; boundary=")

        parts = _parse_multipart(content_type, body)
        assert [p.get_param("name", header="content-disposition") for p in parts] == ["video", "audio"]
        assert [p.get_filename() for p in parts] == ["episode 42.mp4", "dub.wav"]
        assert parts[0].get_content_type() == "video/mp4"
        assert parts[1].get_content_type() == mimetypes.guess_type("dub.wav")[0]
        assert parts[1].get_content_type().startswith("audio/")
        assert parts[0].get_payload(decode=True) == video.read_bytes()
        assert parts[1].get_payload(decode=True) == audio.read_bytes()

    def test_string_paths_and_unknown_types(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        video = tmp_path / "clip.unknownext"
        audio = tmp_path / "voice.mp3"
        video.write_bytes(b"v" * 10)
        audio.write_bytes(b"a" * 20)
        capture = _UploadCapture()
        requests_mock.post(UPLOAD_URL, json=capture)
        hook.generate_with_media(str(video), str(audio))
        parts = _parse_multipart(capture.headers[0]["Content-Type"], capture.bodies[0])
        assert parts[0].get_content_type() == "application/octet-stream"
        assert parts[1].get_content_type() == "audio/mpeg"
        assert parts[0].get_payload(decode=True) == b"v" * 10

    def test_file_objects_are_rewound_not_closed(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        video = io.BytesIO(b"HEADER" + b"video-bytes")
        video.name = "/some/dir/take1.mp4"
        video.seek(6)  # only what is left is uploaded
        audio = io.BytesIO(b"audio-bytes")
        capture = _UploadCapture()
        requests_mock.post(UPLOAD_URL, json=capture)
        hook.generate_with_media(video, audio)

        parts = _parse_multipart(capture.headers[0]["Content-Type"], capture.bodies[0])
        assert parts[0].get_filename() == "take1.mp4"
        assert parts[0].get_payload(decode=True) == b"video-bytes"
        assert parts[1].get_filename() == "audio"  # no name: the field name
        assert parts[1].get_payload(decode=True) == b"audio-bytes"
        assert not video.closed
        assert not audio.closed
        assert video.tell() == 6
        assert audio.tell() == 0

    def test_retried_on_429_with_the_whole_body_again(
        self, hook: ChamelaionHook, requests_mock: Mocker, media_files: tuple[Path, Path], sleeps: Any
    ) -> None:
        video, audio = media_files
        capture = _UploadCapture([(429, {"message": "slow down"}, {"Retry-After": "3"})])
        requests_mock.post(UPLOAD_URL, json=capture)
        assert hook.generate_with_media(video, audio) == REQUEST_ID
        assert requests_mock.call_count == 2
        assert sleeps == [3.0]
        assert capture.bodies[0] != b""
        for headers, body in zip(capture.headers, capture.bodies, strict=True):
            parts = _parse_multipart(headers["Content-Type"], body)
            assert parts[0].get_payload(decode=True) == video.read_bytes()
            assert parts[1].get_payload(decode=True) == audio.read_bytes()

    def test_file_object_retried_on_429_sends_the_same_bytes(
        self, hook: ChamelaionHook, requests_mock: Mocker
    ) -> None:
        video, audio = io.BytesIO(b"v" * 50), io.BytesIO(b"a" * 30)
        capture = _UploadCapture([(429, {}, {"Retry-After": "0"})])
        requests_mock.post(UPLOAD_URL, json=capture)
        hook.generate_with_media(video, audio)
        assert len(capture.bodies) == 2
        parts = [
            _parse_multipart(h["Content-Type"], b)
            for h, b in zip(capture.headers, capture.bodies, strict=True)
        ]
        assert [p.get_payload(decode=True) for p in parts[1]] == [b"v" * 50, b"a" * 30]

    @pytest.mark.parametrize("status", [500, 502, 503])
    def test_not_retried_on_server_error(
        self, hook: ChamelaionHook, requests_mock: Mocker, media_files: tuple[Path, Path], status: int
    ) -> None:
        requests_mock.post(UPLOAD_URL, status_code=status, json={"message": "boom"})
        with pytest.raises(ChamelaionServerError) as info:
            hook.generate_with_media(*media_files)
        assert info.value.status_code == status
        assert requests_mock.call_count == 1

    def test_413_is_a_validation_error(
        self, hook: ChamelaionHook, requests_mock: Mocker, media_files: tuple[Path, Path]
    ) -> None:
        requests_mock.post(UPLOAD_URL, status_code=413, json={"message": "file too large"})
        with pytest.raises(ChamelaionValidationError, match="file too large"):
            hook.generate_with_media(*media_files)
        assert requests_mock.call_count == 1

    def test_missing_file_named_before_any_call(
        self, hook: ChamelaionHook, requests_mock: Mocker, media_files: tuple[Path, Path], tmp_path: Path
    ) -> None:
        missing = tmp_path / "nope" / "missing.wav"
        with pytest.raises(ChamelaionConfigError) as info:
            hook.generate_with_media(media_files[0], missing)
        assert str(missing) in str(info.value)
        assert "audio" in str(info.value)
        assert requests_mock.call_count == 0

    def test_empty_file_named_before_any_call(
        self, hook: ChamelaionHook, requests_mock: Mocker, media_files: tuple[Path, Path], tmp_path: Path
    ) -> None:
        empty = tmp_path / "empty.mp4"
        empty.write_bytes(b"")
        with pytest.raises(ChamelaionConfigError) as info:
            hook.generate_with_media(empty, media_files[1])
        assert str(empty) in str(info.value)
        assert "empty" in str(info.value)
        assert "video" in str(info.value)
        assert requests_mock.call_count == 0

    def test_directory_is_not_a_file(
        self, hook: ChamelaionHook, requests_mock: Mocker, media_files: tuple[Path, Path], tmp_path: Path
    ) -> None:
        with pytest.raises(ChamelaionConfigError, match="not a file"):
            hook.generate_with_media(tmp_path, media_files[1])
        assert requests_mock.call_count == 0

    @pytest.mark.parametrize("source", [None, "", "  "])
    def test_missing_source(
        self, hook: ChamelaionHook, requests_mock: Mocker, media_files: tuple[Path, Path], source: Any
    ) -> None:
        with pytest.raises(ChamelaionConfigError, match="audio is required"):
            hook.generate_with_media(media_files[0], source)
        assert requests_mock.call_count == 0

    def test_non_seekable_file_object(
        self, hook: ChamelaionHook, requests_mock: Mocker, media_files: tuple[Path, Path]
    ) -> None:
        class Pipe(io.BytesIO):
            def seekable(self) -> bool:
                return False

        with pytest.raises(ChamelaionConfigError, match="cannot seek"):
            hook.generate_with_media(Pipe(b"data"), media_files[1])
        assert requests_mock.call_count == 0

    def test_exhausted_file_object(
        self, hook: ChamelaionHook, requests_mock: Mocker, media_files: tuple[Path, Path]
    ) -> None:
        spent = io.BytesIO(b"data")
        spent.read()
        with pytest.raises(ChamelaionConfigError, match="no bytes left"):
            hook.generate_with_media(media_files[0], spent)
        assert requests_mock.call_count == 0
