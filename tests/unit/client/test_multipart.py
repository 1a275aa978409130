"""MultipartBody: the streamed multipart/form-data body of known length."""

from __future__ import annotations

import io

import pytest

from airflow_provider_chamelaion.client.media import MediaInfo
from airflow_provider_chamelaion.client.multipart import FilePart, MultipartBody
from airflow_provider_chamelaion.exceptions import (
    ChamelaionConfigError,
)
from tests.harness.mock_api import _parse_multipart


class TestMultipartBody:
    def _body(self, chunk_size: int = 4) -> tuple[MultipartBody, bytes, bytes]:
        video, audio = b"0123456789", b"abcdefg"
        body = MultipartBody(
            [
                FilePart("video", MediaInfo("a.mp4", "video/mp4", len(video)), io.BytesIO(video)),
                FilePart("audio", MediaInfo("b.wav", "audio/wav", len(audio)), io.BytesIO(audio)),
            ],
            chunk_size=chunk_size,
        )
        return body, video, audio

    def test_bytes_and_length(self) -> None:
        body, video, audio = self._body()
        raw = b"".join(body)
        assert len(body) == len(raw)
        boundary = body.boundary.encode()
        assert body.content_type == f"multipart/form-data; boundary={body.boundary}"
        expected = (
            b"--" + boundary + b"\r\n"
            b'Content-Disposition: form-data; name="video"; filename="a.mp4"\r\n'
            b"Content-Type: video/mp4\r\n\r\n" + video + b"\r\n"
            b"--" + boundary + b"\r\n"
            b'Content-Disposition: form-data; name="audio"; filename="b.wav"\r\n'
            b"Content-Type: audio/wav\r\n\r\n" + audio + b"\r\n"
            b"--" + boundary + b"--\r\n"
        )
        assert raw == expected

    def test_parses_as_multipart(self) -> None:
        body, video, audio = self._body()
        parts = _parse_multipart(body.content_type, b"".join(body))
        assert [p.get_payload(decode=True) for p in parts] == [video, audio]

    def test_file_read_in_bounded_chunks(self) -> None:
        body, video, _ = self._body(chunk_size=4)
        chunks = list(body)
        # header, 4 + 4 + 2 bytes of video, CRLF, header, 4 + 3 of audio, CRLF, closing boundary
        file_chunks = [c for c in chunks if c in (video[0:4], video[4:8], video[8:10])]
        assert file_chunks == [b"0123", b"4567", b"89"]
        assert max(len(c) for c in chunks if not c.startswith(b"--")) <= 4

    def test_unique_boundaries(self) -> None:
        assert self._body()[0].boundary != self._body()[0].boundary

    def test_shrinking_file_is_an_error(self) -> None:
        body = MultipartBody([FilePart("video", MediaInfo("a.mp4", "video/mp4", 10), io.BytesIO(b"short"))])
        with pytest.raises(ChamelaionConfigError, match="shrank"):
            b"".join(body)

    def test_quotes_in_filename_are_escaped(self) -> None:
        data = b"x"
        body = MultipartBody([FilePart("video", MediaInfo('a"b\r\n.mp4', "video/mp4", 1), io.BytesIO(data))])
        raw = b"".join(body)
        assert b'filename="a%22b%0D%0A.mp4"' in raw
        assert len(body) == len(raw)
