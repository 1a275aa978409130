"""The sync (requests) path of ChamelaionHook, against requests-mock: wire format, retries, errors, secrets."""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import logging
import mimetypes
import os
import pickle
import sys
from datetime import datetime, timedelta, timezone
from email.message import Message
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import urllib3
from requests_mock import Mocker

from airflow_provider_chamelaion.connection import ApiSettings
from airflow_provider_chamelaion.exceptions import (
    ChamelaionAPIError,
    ChamelaionAuthError,
    ChamelaionConfigError,
    ChamelaionError,
    ChamelaionNotFoundError,
    ChamelaionRateLimitError,
    ChamelaionResponseError,
    ChamelaionServerError,
    ChamelaionTransportError,
    ChamelaionValidationError,
)
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
from airflow_provider_chamelaion.media import MediaInfo
from airflow_provider_chamelaion.models import LipsyncRequest, RequestPage
from airflow_provider_chamelaion.multipart import FilePart, MultipartBody
from airflow_provider_chamelaion.retry import RetryPolicy
from airflow_provider_chamelaion.wire import parse_retry_after
from tests.conftest import API_KEY, MOCK_BASE_URL

GENERATE_URL = f"{MOCK_BASE_URL}/v1/lipsync/generate"
UPLOAD_URL = f"{MOCK_BASE_URL}/v1/lipsync/generate-with-media"
REQUESTS_URL = f"{MOCK_BASE_URL}/v1/lipsync/requests"
REQUEST_ID = "6f82a2d8-a6d4-4e8a-a0fa-e8b09823a2d8"
REQUEST_URL = f"{REQUESTS_URL}/{REQUEST_ID}"
VIDEO_URL = "https://cdn.example.com/episodes/42.mp4"
AUDIO_URL = "https://cdn.example.com/dubs/42-japanese.wav"
STORAGE_URL = "https://storage.chamelaion.test/output/6f82a2d8.mp4"
OUTPUT = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8

ACCEPTED = {"request_id": REQUEST_ID, "status": "success"}


def _request_json(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": REQUEST_ID,
        "status": "completed",
        "created_at": "2026-04-07T10:00:00Z",
        "output_url": STORAGE_URL,
    }
    payload.update(overrides)
    return payload


def _page(items: list[dict[str, Any]], *, total: int, limit: int = 100, offset: int = 0) -> dict[str, Any]:
    return {"data": items, "pagination": {"limit": limit, "offset": offset, "total": total}}


def _item(request_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": request_id, "status": "queued", "created_at": "2026-04-07T10:00:00Z", **extra}


def _query(request: Any) -> dict[str, list[str]]:
    """The query string, case preserved (requests-mock's own ``qs`` lowercases values)."""
    return parse_qs(urlsplit(request.url).query, keep_blank_values=True)


def _last(mocker: Mocker) -> Any:
    """The last request requests-mock saw (there must be one)."""
    assert mocker.last_request is not None
    return mocker.last_request


def _no_chained_traceback(error: BaseException) -> bool:
    """Whether the error is shown alone, without a JSONDecodeError/requests traceback before it."""
    return error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def _path(request: Any) -> str:
    return urlsplit(request.url).path


@pytest.fixture
def hook(mock_hook: ChamelaionHook) -> ChamelaionHook:
    return mock_hook


# -- generate -------------------------------------------------------------------------------------


class TestGenerate:
    def test_minimal_call(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.post(GENERATE_URL, json=ACCEPTED)
        assert hook.generate(VIDEO_URL, AUDIO_URL) == REQUEST_ID
        assert requests_mock.call_count == 1
        sent = _last(requests_mock)
        assert sent.method == "POST"
        assert sent.url == GENERATE_URL
        assert sent.headers["x-api-key"] == API_KEY
        assert sent.headers["Content-Type"] == "application/json"
        assert sent.json() == {
            "inputs": [{"type": "video", "url": VIDEO_URL}, {"type": "audio", "url": AUDIO_URL}]
        }

    @pytest.mark.parametrize(
        ("kwargs", "extra"),
        [
            ({"reference_id": "dub-episode-42"}, {"reference_id": "dub-episode-42"}),
            ({"disable_active_speaker_detection": True}, {"disable_active_speaker_detection": True}),
            ({"disable_active_speaker_detection": False}, {"disable_active_speaker_detection": False}),
            (
                {"reference_id": "ep:42_v2.1", "disable_active_speaker_detection": True},
                {"reference_id": "ep:42_v2.1", "disable_active_speaker_detection": True},
            ),
            ({"reference_id": None, "disable_active_speaker_detection": None}, {}),
        ],
    )
    def test_optional_fields_only_when_given(
        self, hook: ChamelaionHook, requests_mock: Mocker, kwargs: dict[str, Any], extra: dict[str, Any]
    ) -> None:
        requests_mock.post(GENERATE_URL, json=ACCEPTED)
        hook.generate(VIDEO_URL, AUDIO_URL, **kwargs)
        assert _last(requests_mock).json() == {
            "inputs": [{"type": "video", "url": VIDEO_URL}, {"type": "audio", "url": AUDIO_URL}],
            **extra,
        }

    def test_answer_without_request_id(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.post(GENERATE_URL, json={"status": "success"})
        with pytest.raises(ChamelaionResponseError, match="no request_id") as info:
            hook.generate(VIDEO_URL, AUDIO_URL)
        assert info.value.path == "/v1/lipsync/generate"
        assert requests_mock.call_count == 1

    @pytest.mark.parametrize(
        "bad_url",
        [
            "ftp://cdn.example.com/v.mp4",
            "s3://bucket/v.mp4",
            "file:///data/v.mp4",
            "/data/v.mp4",
            "videos/v.mp4",
            "",
            "   ",
            "https://",
            "cdn.example.com/v.mp4",
        ],
    )
    @pytest.mark.parametrize("which", ["video_url", "audio_url"])
    def test_rejects_non_http_urls_before_any_call(
        self, hook: ChamelaionHook, requests_mock: Mocker, bad_url: str, which: str
    ) -> None:
        urls = {"video_url": VIDEO_URL, "audio_url": AUDIO_URL, which: bad_url}
        with pytest.raises(ChamelaionConfigError, match=which):
            hook.generate(urls["video_url"], urls["audio_url"])
        assert requests_mock.call_count == 0

    @pytest.mark.parametrize("reference_id", ["a/b", "/lead", "", "  ", "tab\tinside", "nl\n"])
    def test_rejects_bad_reference_id_before_any_call(
        self, hook: ChamelaionHook, requests_mock: Mocker, reference_id: str
    ) -> None:
        with pytest.raises(ChamelaionConfigError, match="reference_id"):
            hook.generate(VIDEO_URL, AUDIO_URL, reference_id=reference_id)
        assert requests_mock.call_count == 0

    @pytest.mark.parametrize("flag", ["yes", 1, 0, "false"])
    def test_rejects_non_bool_speaker_flag(
        self, hook: ChamelaionHook, requests_mock: Mocker, flag: Any
    ) -> None:
        with pytest.raises(ChamelaionConfigError, match="disable_active_speaker_detection"):
            hook.generate(VIDEO_URL, AUDIO_URL, disable_active_speaker_detection=flag)
        assert requests_mock.call_count == 0


# -- get / list / iterate / find ------------------------------------------------------------------


class TestGetRequest:
    def test_exact_call_and_parsed_answer(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(REQUEST_URL, json=_request_json(reference_id="dub-42", extra_field=1))
        request = hook.get_request(REQUEST_ID)
        assert request == LipsyncRequest(
            id=REQUEST_ID,
            status="completed",
            created_at="2026-04-07T10:00:00Z",
            output_url=STORAGE_URL,
            reference_id="dub-42",
        )
        assert requests_mock.call_count == 1
        sent = _last(requests_mock)
        assert sent.method == "GET"
        assert sent.url == REQUEST_URL
        assert sent.headers["x-api-key"] == API_KEY

    @pytest.mark.parametrize(
        ("request_id", "segment"),
        [
            ("dub episode 42", "dub%20episode%2042"),
            ("ep?42#x", "ep%3F42%23x"),
            ("a%2Fb", "a%252Fb"),
            ("Dub:42&lang=ja", "Dub%3A42%26lang%3Dja"),
            ("épisode", "%C3%A9pisode"),
        ],
    )
    def test_id_is_escaped_as_one_path_segment(
        self, hook: ChamelaionHook, requests_mock: Mocker, request_id: str, segment: str
    ) -> None:
        requests_mock.get(f"{REQUESTS_URL}/{segment}", json=_item(request_id))
        assert hook.get_request(request_id).id == request_id
        assert _path(_last(requests_mock)) == f"/api/v1/lipsync/requests/{segment}"
        assert urlsplit(_last(requests_mock).url).query == ""

    @pytest.mark.parametrize("request_id", ["a/b", "", "../other", "x\x00"])
    def test_rejects_bad_id_before_any_call(
        self, hook: ChamelaionHook, requests_mock: Mocker, request_id: str
    ) -> None:
        with pytest.raises(ChamelaionConfigError, match="request_id"):
            hook.get_request(request_id)
        assert requests_mock.call_count == 0

    def test_wrong_shape_is_a_response_error(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(REQUEST_URL, json={"id": REQUEST_ID})
        with pytest.raises(ChamelaionResponseError, match="missing status") as info:
            hook.get_request(REQUEST_ID)
        assert info.value.status_code == 200
        assert requests_mock.call_count == 1


class TestListRequests:
    def test_no_params_sends_no_query(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(REQUESTS_URL, json=_page([_item("a")], total=1))
        page = hook.list_requests()
        assert isinstance(page, RequestPage)
        assert [r.id for r in page.data] == ["a"]
        sent = _last(requests_mock)
        assert sent.method == "GET"
        assert sent.url == REQUESTS_URL
        assert sent.headers["x-api-key"] == API_KEY

    @pytest.mark.parametrize(
        ("kwargs", "query"),
        [
            ({"limit": 10}, {"limit": ["10"]}),
            ({"offset": 0}, {"offset": ["0"]}),
            ({"offset": 40}, {"offset": ["40"]}),
            ({"reference_id": "Dub-42"}, {"reference_id": ["Dub-42"]}),
            (
                {"limit": 5, "offset": 10, "reference_id": "batch 2026/04"},
                {"limit": ["5"], "offset": ["10"], "reference_id": ["batch 2026/04"]},
            ),
            ({"limit": None, "offset": None, "reference_id": None}, {}),
        ],
    )
    def test_only_given_params_are_sent(
        self, hook: ChamelaionHook, requests_mock: Mocker, kwargs: dict[str, Any], query: dict[str, list[str]]
    ) -> None:
        requests_mock.get(REQUESTS_URL, json=_page([], total=0))
        hook.list_requests(**kwargs)
        assert _query(_last(requests_mock)) == query
        assert _path(_last(requests_mock)) == "/api/v1/lipsync/requests"

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"limit": 0},
            {"limit": -1},
            {"limit": True},
            {"limit": "10"},
            {"limit": 1.5},
            {"offset": -1},
            {"offset": False},
            {"offset": "0"},
            {"reference_id": ""},
        ],
    )
    def test_bad_params_fail_before_any_call(
        self, hook: ChamelaionHook, requests_mock: Mocker, kwargs: dict[str, Any]
    ) -> None:
        with pytest.raises(ChamelaionConfigError, match=next(iter(kwargs))):
            hook.list_requests(**kwargs)
        assert requests_mock.call_count == 0


class _PagedServer:
    """A list endpoint over ``items`` that honours limit/offset, clamping the page size to ``max_limit``."""

    def __init__(self, items: list[dict[str, Any]], max_limit: int = 1000) -> None:
        self.items = items
        self.max_limit = max_limit
        self.seen: list[dict[str, list[str]]] = []

    def __call__(self, request: Any, context: Any) -> dict[str, Any]:
        query = _query(request)
        self.seen.append(query)
        limit = min(int(query.get("limit", ["20"])[0]), self.max_limit)
        offset = int(query.get("offset", ["0"])[0])
        return _page(self.items[offset : offset + limit], total=len(self.items), limit=limit, offset=offset)


class TestIterRequests:
    def test_pages_until_total(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        server = _PagedServer([_item(f"r{i}") for i in range(5)])
        requests_mock.get(REQUESTS_URL, json=server)
        ids = [r.id for r in hook.iter_requests(page_size=2)]
        assert ids == ["r0", "r1", "r2", "r3", "r4"]
        assert server.seen == [
            {"limit": ["2"], "offset": ["0"]},
            {"limit": ["2"], "offset": ["2"]},
            {"limit": ["2"], "offset": ["4"]},
        ]

    def test_exact_multiple_needs_no_extra_call(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        server = _PagedServer([_item(f"r{i}") for i in range(4)])
        requests_mock.get(REQUESTS_URL, json=server)
        assert len(list(hook.iter_requests(page_size=2))) == 4
        assert requests_mock.call_count == 2

    def test_reference_id_sent_on_every_page(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        server = _PagedServer([_item(f"r{i}", reference_id="Batch-1") for i in range(3)])
        requests_mock.get(REQUESTS_URL, json=server)
        assert len(list(hook.iter_requests(reference_id="Batch-1", page_size=2))) == 3
        assert [q["reference_id"] for q in server.seen] == [["Batch-1"], ["Batch-1"]]

    def test_server_clamping_page_size(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        server = _PagedServer([_item(f"r{i}") for i in range(7)], max_limit=3)
        requests_mock.get(REQUESTS_URL, json=server)
        ids = [r.id for r in hook.iter_requests(page_size=100)]
        assert ids == [f"r{i}" for i in range(7)]
        assert [q["offset"] for q in server.seen] == [["0"], ["3"], ["6"]]

    def test_overlapping_pages_never_yield_an_id_twice(
        self, hook: ChamelaionHook, requests_mock: Mocker
    ) -> None:
        # A new request arrived between the two calls and pushed "b" onto the second page too.
        requests_mock.get(
            REQUESTS_URL,
            [
                {"json": _page([_item("a"), _item("b")], total=4, limit=2)},
                {"json": _page([_item("b"), _item("c")], total=5, limit=2, offset=2)},
                {"json": _page([_item("d")], total=5, limit=2, offset=4)},
            ],
        )
        ids = [r.id for r in hook.iter_requests(page_size=2)]
        assert ids == ["a", "b", "c", "d"]
        assert requests_mock.call_count == 3

    def test_stops_on_an_empty_page(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(
            REQUESTS_URL,
            [
                {"json": _page([_item("a"), _item("b")], total=10, limit=2)},
                {"json": _page([], total=10, limit=2, offset=2)},
                {"json": _page([_item("never")], total=10, limit=2, offset=2)},
            ],
        )
        assert [r.id for r in hook.iter_requests(page_size=2)] == ["a", "b"]
        assert requests_mock.call_count == 2

    def test_empty_account(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(REQUESTS_URL, json=_page([], total=0))
        assert list(hook.iter_requests()) == []
        assert requests_mock.call_count == 1

    def test_is_lazy(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(REQUESTS_URL, json=_PagedServer([_item(f"r{i}") for i in range(6)]))
        iterator = hook.iter_requests(page_size=2)
        assert next(iterator).id == "r0"
        assert requests_mock.call_count == 1

    @pytest.mark.parametrize("page_size", [0, -5, True])
    def test_bad_page_size_fails_before_any_call(
        self, hook: ChamelaionHook, requests_mock: Mocker, page_size: Any
    ) -> None:
        with pytest.raises(ChamelaionConfigError, match="limit"):
            list(hook.iter_requests(page_size=page_size))
        assert requests_mock.call_count == 0


class TestFindRequests:
    def test_exact_matches_newest_first(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        items = [
            _item("old", reference_id="dub-42", created_at="2026-03-30T11:00:00Z"),
            _item("prefix", reference_id="dub-420", created_at="2026-03-30T12:00:00Z"),
            _item("new", reference_id="dub-42", created_at="2026-03-30T11:02:00Z"),
            _item("other", reference_id=None, created_at="2026-03-31T11:02:00Z"),
        ]
        requests_mock.get(REQUESTS_URL, json=_page(items, total=4))
        found = hook.find_requests("dub-42")
        assert [r.id for r in found] == ["new", "old"]
        assert _query(_last(requests_mock))["reference_id"] == ["dub-42"]

    def test_no_match(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(REQUESTS_URL, json=_page([], total=0))
        assert hook.find_requests("nothing") == []


class TestTestConnection:
    def test_ok(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(REQUESTS_URL, json=_page([_item("a")], total=17, limit=1))
        ok, message = hook.test_connection()
        assert ok is True
        assert MOCK_BASE_URL in message
        assert "17" in message
        assert _query(_last(requests_mock)) == {"limit": ["1"]}
        assert _last(requests_mock).headers["x-api-key"] == API_KEY

    def test_bad_key(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(REQUESTS_URL, status_code=401, json={"message": "Invalid API key"})
        ok, message = hook.test_connection()
        assert ok is False
        assert "Invalid API key" in message
        assert "401" in message
        assert API_KEY not in message
        assert requests_mock.call_count == 1

    def test_missing_connection(
        self, requests_mock: Mocker, monkeypatch: pytest.MonkeyPatch, retry_policy: RetryPolicy
    ) -> None:
        monkeypatch.delenv("AIRFLOW_CONN_CHAMELAION_DEFAULT", raising=False)
        ok, message = ChamelaionHook(retry_policy=retry_policy).test_connection()
        assert ok is False
        assert "chamelaion_default" in message
        assert requests_mock.call_count == 0


# -- uploads --------------------------------------------------------------------------------------


def _parse_multipart(content_type: str, body: bytes) -> list[Message]:
    raw = f"Content-Type: {content_type}\r\n\r\n".encode() + body
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    assert message.is_multipart()
    assert not message.defects
    return list(message.iter_parts())


class _UploadCapture:
    """A requests-mock callback that reads the streamed body while the hook still has the files open."""

    def __init__(self, responses: list[tuple[int, dict[str, Any], dict[str, str]]] | None = None) -> None:
        self.responses = list(responses or [])
        self.bodies: list[bytes] = []
        self.body_types: list[type] = []
        self.headers: list[dict[str, str]] = []

    def __call__(self, request: Any, context: Any) -> dict[str, Any]:
        self.body_types.append(type(request.body))
        self.headers.append(dict(request.headers))
        self.bodies.append(b"".join(request.body))
        if self.responses:
            status, payload, headers = self.responses.pop(0)
            context.status_code = status
            context.headers.update(headers)
            return payload
        return ACCEPTED


@pytest.fixture
def media_files(tmp_path: Path) -> tuple[Path, Path]:
    video = tmp_path / "episode 42.mp4"
    audio = tmp_path / "dub.wav"
    video.write_bytes(b"VIDEO-" + bytes(range(256)) * 5)
    audio.write_bytes(b"AUDIO-" + b"\x01\x02" * 300)
    return video, audio


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


# -- downloads ------------------------------------------------------------------------------------


def _completed(output_url: str | None = STORAGE_URL, status: str = "completed") -> LipsyncRequest:
    return LipsyncRequest(id=REQUEST_ID, status=status, output_url=output_url)


class TestDownloadOutput:
    def test_writes_the_file(self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path) -> None:
        requests_mock.get(STORAGE_URL, content=OUTPUT, headers={"Content-Length": str(len(OUTPUT))})
        destination = tmp_path / "out.mp4"
        assert hook.download_output(_completed(), destination) == destination
        assert destination.read_bytes() == OUTPUT
        assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
        assert requests_mock.call_count == 1
        assert _last(requests_mock).headers["Accept-Encoding"] == "identity"

    def test_by_id_fetches_the_request_first(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        requests_mock.get(REQUEST_URL, json=_request_json())
        requests_mock.get(STORAGE_URL, content=OUTPUT)
        hook.download_output(REQUEST_ID, tmp_path / "o.mp4")
        assert [r.url for r in requests_mock.request_history] == [REQUEST_URL, STORAGE_URL]
        assert (tmp_path / "o.mp4").read_bytes() == OUTPUT

    def test_atomic_temp_file_then_rename(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        destination = tmp_path / "out.mp4"
        observed: list[tuple[bool, list[str]]] = []

        class ObservingBody(io.BytesIO):
            def read(self, size: int | None = -1) -> bytes:
                observed.append((destination.exists(), sorted(p.name for p in tmp_path.iterdir())))
                return super().read(size)

        replaced: list[tuple[str, str]] = []
        real_replace = os.replace

        def spy_replace(src: Any, dst: Any) -> None:
            replaced.append((os.fspath(src), os.fspath(dst)))
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", spy_replace)
        requests_mock.get(
            STORAGE_URL, body=ObservingBody(OUTPUT), headers={"Content-Length": str(len(OUTPUT))}
        )
        hook.download_output(_completed(), destination)

        assert observed
        for exists, names in observed:
            assert not exists  # the final name appears only once the file is complete
            assert len(names) == 1
            assert names[0].startswith(".out.mp4.")
            assert names[0].endswith(".part")
        assert len(replaced) == 1
        source, target = replaced[0]
        assert Path(source).parent == tmp_path
        assert Path(source).name.endswith(".part")
        assert target == str(destination)
        assert destination.read_bytes() == OUTPUT
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]

    def test_size_mismatch_leaves_nothing(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        requests_mock.get(STORAGE_URL, content=OUTPUT[:100], headers={"Content-Length": str(len(OUTPUT))})
        destination = tmp_path / "out.mp4"
        with pytest.raises(ChamelaionTransportError, match=f"100 of {len(OUTPUT)} bytes"):
            hook.download_output(_completed(), destination)
        assert list(tmp_path.iterdir()) == []
        # A truncated download is a transport failure: retried like any GET, up to max_attempts.
        assert requests_mock.call_count == hook.retry_policy.max_attempts

    def test_size_mismatch_keeps_an_existing_file(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        destination = tmp_path / "out.mp4"
        destination.write_bytes(b"previous output")
        requests_mock.get(STORAGE_URL, content=b"abc", headers={"Content-Length": "10"})
        with pytest.raises(ChamelaionTransportError):
            hook.download_output(_completed(), destination)
        assert destination.read_bytes() == b"previous output"
        assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]

    def test_truncated_then_complete(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path, sleeps: Any
    ) -> None:
        requests_mock.get(
            STORAGE_URL,
            [
                {"content": OUTPUT[:10], "headers": {"Content-Length": str(len(OUTPUT))}},
                {"content": OUTPUT, "headers": {"Content-Length": str(len(OUTPUT))}},
            ],
        )
        hook.download_output(_completed(), tmp_path / "o.mp4")
        assert (tmp_path / "o.mp4").read_bytes() == OUTPUT
        assert requests_mock.call_count == 2
        assert len(sleeps) == 1

    def test_directory_destination_gets_the_output_name(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        requests_mock.get(STORAGE_URL + "?X-Amz-Signature=abc", content=OUTPUT)
        written = hook.download_output(_completed(STORAGE_URL + "?X-Amz-Signature=abc"), tmp_path)
        assert written == tmp_path / "6f82a2d8.mp4"
        assert written.read_bytes() == OUTPUT

    def test_trailing_slash_destination_is_created(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        requests_mock.get(STORAGE_URL, content=OUTPUT)
        written = hook.download_output(_completed(), f"{tmp_path}/new/dir/")
        assert written == tmp_path / "new" / "dir" / "6f82a2d8.mp4"
        assert written.read_bytes() == OUTPUT

    def test_output_url_without_file_name(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        requests_mock.get("https://storage.chamelaion.test/", content=OUTPUT)
        written = hook.download_output(_completed("https://storage.chamelaion.test/"), tmp_path)
        assert written == tmp_path / f"{REQUEST_ID}.mp4"

    def test_no_api_key_for_another_host(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        requests_mock.get(STORAGE_URL, content=OUTPUT)
        hook.download_output(_completed(), tmp_path / "o.mp4")
        assert "x-api-key" not in _last(requests_mock).headers

    @pytest.mark.parametrize(
        "url",
        [
            "https://api.chamelaion.test:8443/api/outputs/o.mp4",
            "http://api.chamelaion.test/api/outputs/o.mp4",
            "https://evil.api.chamelaion.test/api/outputs/o.mp4",
            "https://api.chamelaion.test.evil.example/api/outputs/o.mp4",
        ],
    )
    def test_no_api_key_for_another_origin(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path, url: str
    ) -> None:
        requests_mock.get(url, content=OUTPUT)
        hook.download_output(_completed(url), tmp_path / "o.mp4")
        assert requests_mock.call_count == 1
        assert "x-api-key" not in _last(requests_mock).headers

    @pytest.mark.parametrize(
        "url",
        [
            f"{MOCK_BASE_URL}/v1/lipsync/outputs/{REQUEST_ID}.mp4",
            "https://API.chamelaion.test:443/files/o.mp4",
        ],
    )
    def test_api_key_sent_to_the_api_origin(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path, url: str
    ) -> None:
        requests_mock.get(url, content=OUTPUT)
        hook.download_output(_completed(url), tmp_path / "o.mp4")
        assert _last(requests_mock).headers["x-api-key"] == API_KEY

    def test_redirect_to_another_host_is_not_followed_with_the_key(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        api_url = f"{MOCK_BASE_URL}/v1/lipsync/outputs/o.mp4"
        requests_mock.get(api_url, status_code=302, headers={"Location": STORAGE_URL})
        requests_mock.get(STORAGE_URL, content=OUTPUT)
        hook.download_output(_completed(api_url), tmp_path / "o.mp4")
        assert (tmp_path / "o.mp4").read_bytes() == OUTPUT
        history = requests_mock.request_history
        assert [r.url for r in history] == [api_url, STORAGE_URL]
        assert history[0].headers["x-api-key"] == API_KEY
        assert "x-api-key" not in history[1].headers

    @pytest.mark.parametrize("status", [403, 404])
    def test_refused_output_url_refetches_the_request_once(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path, status: int
    ) -> None:
        expired = STORAGE_URL + "?sig=old"
        fresh = STORAGE_URL + "?sig=new"
        requests_mock.get(expired, status_code=status, text="<Error>AccessDenied</Error>")
        requests_mock.get(REQUEST_URL, json=_request_json(output_url=fresh))
        requests_mock.get(fresh, content=OUTPUT)
        written = hook.download_output(_completed(expired), tmp_path / "o.mp4")
        assert written.read_bytes() == OUTPUT
        assert [r.url for r in requests_mock.request_history] == [expired, REQUEST_URL, fresh]

    def test_refused_twice_gives_up_after_one_refetch(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        requests_mock.get(STORAGE_URL, status_code=403, text="denied")
        refetch = requests_mock.get(REQUEST_URL, json=_request_json())
        with pytest.raises(ChamelaionAuthError) as info:
            hook.download_output(_completed(STORAGE_URL + "?sig=secret-signature"), tmp_path / "o.mp4")
        assert refetch.call_count == 1
        assert requests_mock.call_count == 3
        assert info.value.status_code == 403
        assert "secret-signature" not in str(info.value)
        assert info.value.path == "/output/6f82a2d8.mp4"
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("status", ["queued", "running", "failed"])
    def test_request_without_output_url(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path, status: str
    ) -> None:
        with pytest.raises(ChamelaionError) as info:
            hook.download_output(_completed(None, status=status), tmp_path / "o.mp4")
        message = str(info.value)
        assert REQUEST_ID in message
        assert repr(status) in message
        assert "no output_url" in message
        assert requests_mock.call_count == 0
        assert list(tmp_path.iterdir()) == []

    def test_request_id_without_output_url(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        requests_mock.get(REQUEST_URL, json=_request_json(status="queued", output_url=None))
        with pytest.raises(ChamelaionError, match="'queued'"):
            hook.download_output(REQUEST_ID, tmp_path / "o.mp4")
        assert requests_mock.call_count == 1

    @pytest.mark.parametrize("destination", [None, "", "  ", 42])
    def test_bad_destination_fails_before_any_call(
        self, hook: ChamelaionHook, requests_mock: Mocker, destination: Any
    ) -> None:
        with pytest.raises(ChamelaionConfigError, match="destination"):
            hook.download_output(REQUEST_ID, destination)
        assert requests_mock.call_count == 0

    @pytest.mark.parametrize(
        "failure",
        [
            {"exc": requests.exceptions.ConnectionError("connection reset by peer")},
            {"exc": requests.exceptions.ReadTimeout},
            {"status_code": 503, "text": "busy"},
            {"status_code": 500, "text": "oops"},
        ],
    )
    def test_dropped_download_is_retried(
        self,
        hook: ChamelaionHook,
        requests_mock: Mocker,
        tmp_path: Path,
        sleeps: Any,
        failure: dict[str, Any],
    ) -> None:
        requests_mock.get(STORAGE_URL, [failure, {"content": OUTPUT}])
        written = hook.download_output(_completed(), tmp_path / "o.mp4")
        assert written.read_bytes() == OUTPUT
        assert requests_mock.call_count == 2
        assert len(sleeps) == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4"]


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


# -- retries --------------------------------------------------------------------------------------


class TestGetRetries:
    @pytest.mark.parametrize("status", [500, 502, 503, 504])
    def test_server_errors_retried(
        self, hook: ChamelaionHook, requests_mock: Mocker, sleeps: Any, status: int
    ) -> None:
        requests_mock.get(
            REQUEST_URL, [{"status_code": status, "json": {"message": "x"}}, {"json": _request_json()}]
        )
        assert hook.get_request(REQUEST_ID).id == REQUEST_ID
        assert requests_mock.call_count == 2
        assert len(sleeps) == 1

    def test_backoff_grows(self, mock_conn: str, requests_mock: Mocker, sleeps: Any) -> None:
        policy = RetryPolicy(sleep=sleeps, initial_backoff=0.5, jitter=0.0)
        requests_mock.get(REQUEST_URL, [{"status_code": 503}] * 4 + [{"json": _request_json()}])
        ChamelaionHook(retry_policy=policy).get_request(REQUEST_ID)
        assert sleeps == [0.5, 1.0, 2.0, 4.0]

    @pytest.mark.parametrize(
        ("retry_after", "expected"),
        [("7", 7.0), ("0", 0.0), ("2.5", 2.5), ("3600", 60.0), ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0)],
    )
    def test_429_retry_after_honoured_and_capped(
        self, hook: ChamelaionHook, requests_mock: Mocker, sleeps: Any, retry_after: str, expected: float
    ) -> None:
        requests_mock.get(
            REQUEST_URL,
            [
                {"status_code": 429, "headers": {"Retry-After": retry_after}, "json": {"message": "slow"}},
                {"json": _request_json()},
            ],
        )
        hook.get_request(REQUEST_ID)
        assert requests_mock.call_count == 2
        assert sleeps == [expected]

    def test_429_http_date_honoured(
        self, hook: ChamelaionHook, requests_mock: Mocker, sleeps: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        frozen = datetime(2026, 4, 7, 10, 0, 0, tzinfo=timezone.utc)

        class FrozenDatetime(datetime):
            @classmethod
            def now(cls, tz: Any = None) -> FrozenDatetime:
                return cls.fromtimestamp(frozen.timestamp(), tz)

        # Freeze "now" where Retry-After is parsed, wherever that function lives.
        monkeypatch.setattr(sys.modules[parse_retry_after.__module__], "datetime", FrozenDatetime)
        requests_mock.get(
            REQUEST_URL,
            [
                {"status_code": 429, "headers": {"Retry-After": "Tue, 07 Apr 2026 10:00:42 GMT"}},
                {"status_code": 429, "headers": {"Retry-After": "Tue, 07 Apr 2026 11:00:00 GMT"}},
                {"json": _request_json()},
            ],
        )
        hook.get_request(REQUEST_ID)
        assert sleeps == [42.0, 60.0]

    def test_far_future_http_date_is_capped(self, mock_conn: str, requests_mock: Mocker, sleeps: Any) -> None:
        policy = RetryPolicy(sleep=sleeps, max_retry_after=12.0)
        future = datetime.now(timezone.utc) + timedelta(days=2)
        requests_mock.get(
            REQUEST_URL,
            [
                {
                    "status_code": 429,
                    "headers": {"Retry-After": future.strftime("%a, %d %b %Y %H:%M:%S GMT")},
                },
                {"json": _request_json()},
            ],
        )
        ChamelaionHook(retry_policy=policy).get_request(REQUEST_ID)
        assert sleeps == [12.0]

    def test_429_without_retry_after_backs_off(
        self, hook: ChamelaionHook, requests_mock: Mocker, sleeps: Any
    ) -> None:
        requests_mock.get(REQUEST_URL, [{"status_code": 429}, {"json": _request_json()}])
        hook.get_request(REQUEST_ID)
        assert len(sleeps) == 1
        assert 0.25 <= sleeps[0] <= 0.5  # default policy: 0.5 s with 50 % jitter

    @pytest.mark.parametrize(
        "exc",
        [
            requests.exceptions.ConnectionError,
            requests.exceptions.ReadTimeout,
            requests.exceptions.ConnectTimeout,
            requests.exceptions.ChunkedEncodingError,
        ],
    )
    def test_transport_errors_retried(
        self, hook: ChamelaionHook, requests_mock: Mocker, sleeps: Any, exc: type[Exception]
    ) -> None:
        requests_mock.get(REQUEST_URL, [{"exc": exc}, {"json": _request_json()}])
        assert hook.get_request(REQUEST_ID).status == "completed"
        assert requests_mock.call_count == 2
        assert len(sleeps) == 1

    def test_attempts_bounded_by_hook_max_attempts(
        self, mock_conn: str, retry_policy: RetryPolicy, requests_mock: Mocker, sleeps: Any
    ) -> None:
        requests_mock.get(REQUEST_URL, status_code=503, json={"message": "maintenance"})
        hook = ChamelaionHook(max_attempts=3, retry_policy=retry_policy)
        with pytest.raises(ChamelaionServerError) as info:
            hook.get_request(REQUEST_ID)
        assert requests_mock.call_count == 3
        assert len(sleeps) == 2
        assert info.value.status_code == 503
        assert "maintenance" in str(info.value)

    def test_max_attempts_one_disables_retries(
        self, mock_conn: str, retry_policy: RetryPolicy, requests_mock: Mocker, sleeps: Any
    ) -> None:
        requests_mock.get(REQUEST_URL, exc=requests.exceptions.ReadTimeout)
        with pytest.raises(ChamelaionTransportError):
            ChamelaionHook(max_attempts=1, retry_policy=retry_policy).get_request(REQUEST_ID)
        assert requests_mock.call_count == 1
        assert sleeps == []

    def test_default_policy_attempts(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(REQUEST_URL, exc=requests.exceptions.ConnectionError)
        with pytest.raises(ChamelaionTransportError) as info:
            hook.get_request(REQUEST_ID)
        assert requests_mock.call_count == 5
        assert info.value.status_code is None
        assert info.value.method == "GET"
        assert info.value.path == f"/v1/lipsync/requests/{REQUEST_ID}"

    def test_hook_rejects_zero_attempts(self, mock_conn: str) -> None:
        with pytest.raises(ValueError, match="max_attempts"):
            ChamelaionHook(max_attempts=0)

    def test_list_is_retried_too(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(REQUESTS_URL, [{"status_code": 502}, {"json": _page([], total=0)}])
        hook.list_requests()
        assert requests_mock.call_count == 2


def _refused() -> requests.exceptions.ConnectionError:
    """What requests raises when nothing listens on the port: the request was never sent."""
    pool = urllib3.HTTPSConnectionPool("api.chamelaion.test")
    connection = urllib3.connection.HTTPSConnection("api.chamelaion.test")
    reason = urllib3.exceptions.NewConnectionError(
        connection, "Failed to establish a new connection: refused"
    )
    return requests.exceptions.ConnectionError(urllib3.exceptions.MaxRetryError(pool, "/api", reason))


class TestPostRetries:
    @pytest.mark.parametrize("status", [500, 502, 503, 504])
    def test_not_retried_on_server_error(
        self, hook: ChamelaionHook, requests_mock: Mocker, sleeps: Any, status: int
    ) -> None:
        requests_mock.post(GENERATE_URL, status_code=status, json={"message": "oops"})
        with pytest.raises(ChamelaionServerError) as info:
            hook.generate(VIDEO_URL, AUDIO_URL)
        assert requests_mock.call_count == 1
        assert sleeps == []
        assert info.value.method == "POST"

    @pytest.mark.parametrize(
        "exc",
        [
            requests.exceptions.ReadTimeout,
            requests.exceptions.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
        ],
    )
    def test_not_retried_when_it_may_have_been_sent(
        self, hook: ChamelaionHook, requests_mock: Mocker, sleeps: Any, exc: type[Exception]
    ) -> None:
        requests_mock.post(GENERATE_URL, [{"exc": exc}, {"json": ACCEPTED}])
        with pytest.raises(ChamelaionTransportError) as info:
            hook.generate(VIDEO_URL, AUDIO_URL)
        assert requests_mock.call_count == 1
        assert info.value.sent is True
        assert sleeps == []

    def test_retried_on_429(self, hook: ChamelaionHook, requests_mock: Mocker, sleeps: Any) -> None:
        requests_mock.post(
            GENERATE_URL, [{"status_code": 429, "headers": {"Retry-After": "5"}}, {"json": ACCEPTED}]
        )
        assert hook.generate(VIDEO_URL, AUDIO_URL) == REQUEST_ID
        assert requests_mock.call_count == 2
        assert sleeps == [5.0]
        # The same body both times.
        bodies = [r.json() for r in requests_mock.request_history]
        assert bodies[0] == bodies[1]

    def test_rate_limited_until_out_of_attempts(
        self, hook: ChamelaionHook, requests_mock: Mocker, sleeps: Any
    ) -> None:
        requests_mock.post(
            GENERATE_URL, status_code=429, headers={"Retry-After": "1"}, json={"message": "quota"}
        )
        with pytest.raises(ChamelaionRateLimitError) as info:
            hook.generate(VIDEO_URL, AUDIO_URL)
        assert requests_mock.call_count == 5
        assert sleeps == [1.0] * 4
        assert info.value.retry_after == 1.0

    def test_retried_on_connect_timeout(
        self, hook: ChamelaionHook, requests_mock: Mocker, sleeps: Any
    ) -> None:
        requests_mock.post(GENERATE_URL, [{"exc": requests.exceptions.ConnectTimeout}, {"json": ACCEPTED}])
        assert hook.generate(VIDEO_URL, AUDIO_URL) == REQUEST_ID
        assert requests_mock.call_count == 2
        assert len(sleeps) == 1

    def test_retried_on_refused_connection(
        self, hook: ChamelaionHook, requests_mock: Mocker, sleeps: Any
    ) -> None:
        requests_mock.post(GENERATE_URL, [{"exc": _refused()}, {"json": ACCEPTED}])
        assert hook.generate(VIDEO_URL, AUDIO_URL) == REQUEST_ID
        assert requests_mock.call_count == 2


# -- errors ---------------------------------------------------------------------------------------


ERROR_CASES = [
    (401, ChamelaionAuthError, {"message": "Invalid API key"}, "Invalid API key"),
    (403, ChamelaionAuthError, {"error": "Forbidden for this plan"}, "Forbidden for this plan"),
    (404, ChamelaionNotFoundError, {"detail": "Request not found"}, "Request not found"),
    (
        422,
        ChamelaionValidationError,
        {"message": "inputs must contain one video"},
        "inputs must contain one video",
    ),
    (400, ChamelaionValidationError, {"error_message": "bad request"}, "bad request"),
]


class TestErrors:
    @pytest.mark.parametrize(("status", "cls", "payload", "message"), ERROR_CASES)
    def test_get_fails_at_once_with_typed_error(
        self,
        hook: ChamelaionHook,
        requests_mock: Mocker,
        sleeps: Any,
        status: int,
        cls: type[ChamelaionAPIError],
        payload: dict[str, Any],
        message: str,
    ) -> None:
        requests_mock.get(REQUEST_URL, status_code=status, json=payload)
        with pytest.raises(cls) as info:
            hook.get_request(REQUEST_ID)
        error = info.value
        assert type(error) is cls
        assert error.status_code == status
        assert error.method == "GET"
        assert error.path == f"/v1/lipsync/requests/{REQUEST_ID}"
        assert error.message == message
        assert message in str(error)
        assert f"HTTP {status}" in str(error)
        assert requests_mock.call_count == 1
        assert sleeps == []

    @pytest.mark.parametrize(("status", "cls", "payload", "message"), ERROR_CASES)
    def test_post_fails_at_once_with_typed_error(
        self,
        hook: ChamelaionHook,
        requests_mock: Mocker,
        status: int,
        cls: type[ChamelaionAPIError],
        payload: dict[str, Any],
        message: str,
    ) -> None:
        requests_mock.post(GENERATE_URL, status_code=status, json=payload)
        with pytest.raises(cls) as info:
            hook.generate(VIDEO_URL, AUDIO_URL)
        assert (info.value.status_code, info.value.method, info.value.path) == (
            status,
            "POST",
            "/v1/lipsync/generate",
        )
        assert info.value.message == message
        assert requests_mock.call_count == 1

    def test_fastapi_style_422_detail_is_readable(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        detail = [{"loc": ["body", "inputs"], "msg": "Field required", "type": "missing"}]
        requests_mock.post(GENERATE_URL, status_code=422, json={"detail": detail})
        with pytest.raises(ChamelaionValidationError) as info:
            hook.generate(VIDEO_URL, AUDIO_URL)
        assert "Field required" in info.value.message
        assert requests_mock.call_count == 1

    def test_empty_error_body(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(REQUEST_URL, status_code=404, text="")
        with pytest.raises(ChamelaionNotFoundError, match="empty response body"):
            hook.get_request(REQUEST_ID)

    def test_502_html_is_readable(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        html = (
            "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
            "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>"
        )
        requests_mock.get(REQUEST_URL, status_code=502, text=html, headers={"Content-Type": "text/html"})
        with pytest.raises(ChamelaionServerError) as info:
            hook.get_request(REQUEST_ID)
        text = str(info.value)
        assert info.value.status_code == 502
        assert "502 Bad Gateway" in text
        assert "text/html" in text
        assert "<" not in text
        assert "JSONDecodeError" not in text
        assert "Expecting value" not in text
        assert _no_chained_traceback(info.value)

    def test_502_html_on_post(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.post(
            GENERATE_URL,
            status_code=502,
            text="<html><body><h1>Bad Gateway</h1></body></html>",
            headers={"Content-Type": "text/html; charset=utf-8"},
        )
        with pytest.raises(ChamelaionServerError, match=r"non-JSON response \(text/html\): Bad Gateway"):
            hook.generate(VIDEO_URL, AUDIO_URL)
        assert requests_mock.call_count == 1

    @pytest.mark.parametrize("body", ["{not json", "<html>ok</html>", "", "null-ish"])
    def test_200_with_malformed_json(self, hook: ChamelaionHook, requests_mock: Mocker, body: str) -> None:
        requests_mock.get(REQUEST_URL, text=body)
        with pytest.raises(ChamelaionResponseError) as info:
            hook.get_request(REQUEST_ID)
        assert info.value.status_code == 200
        assert "not JSON" in str(info.value)
        assert _no_chained_traceback(info.value)
        assert requests_mock.call_count == 1

    def test_200_with_json_of_the_wrong_type(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(REQUESTS_URL, json=["a", "b"])
        with pytest.raises(ChamelaionResponseError, match="unexpected answer shape"):
            hook.list_requests()

    def test_redirect_is_not_followed(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(REQUEST_URL, status_code=302, headers={"Location": "https://elsewhere.example/x"})
        with pytest.raises(ChamelaionAPIError) as info:
            hook.get_request(REQUEST_ID)
        assert info.value.status_code == 302
        assert requests_mock.call_count == 1

    def test_errors_survive_pickling(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(REQUEST_URL, status_code=404, json={"message": "gone"})
        with pytest.raises(ChamelaionNotFoundError) as info:
            hook.get_request(REQUEST_ID)
        clone = pickle.loads(pickle.dumps(info.value))  # noqa: S301 - our own bytes
        assert type(clone) is ChamelaionNotFoundError
        assert (clone.status_code, clone.method, clone.path, clone.message) == (
            404,
            "GET",
            f"/v1/lipsync/requests/{REQUEST_ID}",
            "gone",
        )
        assert str(clone) == str(info.value)


# -- secrets --------------------------------------------------------------------------------------


class TestSecrets:
    def test_hook_str_and_repr(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(REQUEST_URL, json=_request_json())
        hook.get_request(REQUEST_ID)
        assert API_KEY not in repr(hook)
        assert API_KEY not in str(hook)
        assert "chamelaion_default" in repr(hook)

    def test_settings_str_and_repr(self, hook: ChamelaionHook) -> None:
        settings = hook.get_settings()
        assert settings.api_key == API_KEY
        assert API_KEY not in repr(settings)
        assert API_KEY not in str(settings)
        assert API_KEY not in repr(ApiSettings(MOCK_BASE_URL, API_KEY))

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 429, 500, 502])
    def test_api_errors_never_hold_the_key(
        self, hook: ChamelaionHook, requests_mock: Mocker, status: int
    ) -> None:
        requests_mock.get(REQUEST_URL, status_code=status, json={"message": "no"})
        with pytest.raises(ChamelaionAPIError) as info:
            hook.get_request(REQUEST_ID)
        self._assert_no_key(info.value)

    @pytest.mark.parametrize(
        "exc",
        [
            requests.exceptions.ConnectionError(
                "HTTPSConnectionPool(host='api.chamelaion.test', port=443): Max retries exceeded with url: "
                f"/api/v1/lipsync/requests/{REQUEST_ID}?token=abc (Caused by ConnectionResetError(104))"
            ),
            requests.exceptions.ReadTimeout(
                "HTTPSConnectionPool(host='api.chamelaion.test'): Read timed out."
            ),
            requests.exceptions.SSLError("certificate verify failed"),
            _refused(),
        ],
    )
    def test_transport_errors_never_hold_the_key(
        self, hook: ChamelaionHook, requests_mock: Mocker, exc: Exception
    ) -> None:
        requests_mock.get(REQUEST_URL, exc=exc)
        with pytest.raises(ChamelaionTransportError) as info:
            hook.get_request(REQUEST_ID)
        self._assert_no_key(info.value)
        assert "?token" not in str(info.value)
        assert _no_chained_traceback(info.value)

    def test_download_errors_never_hold_the_key(
        self, hook: ChamelaionHook, requests_mock: Mocker, tmp_path: Path
    ) -> None:
        url = f"{MOCK_BASE_URL}/v1/outputs/o.mp4"
        requests_mock.get(url, status_code=500, text="boom")
        with pytest.raises(ChamelaionServerError) as info:
            hook.download_output(_completed(url), tmp_path / "o.mp4")
        assert _last(requests_mock).headers["x-api-key"] == API_KEY  # it was sent, it must not leak
        self._assert_no_key(info.value)

    def test_config_errors_never_hold_the_key(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(
            "AIRFLOW_CONN_CHAMELAION_DEFAULT",
            json.dumps({"conn_type": "chamelaion", "host": "ftp://x.test", "password": API_KEY}),
        )
        with pytest.raises(ChamelaionConfigError) as info:
            ChamelaionHook().get_settings()
        self._assert_no_key(info.value)

    def test_nothing_logged_holds_the_key(
        self,
        hook: ChamelaionHook,
        requests_mock: Mocker,
        caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        caplog.set_level(logging.DEBUG)
        requests_mock.get(
            REQUEST_URL,
            [
                {"status_code": 503, "text": "busy"},
                {"exc": requests.exceptions.ConnectionError("connection reset by peer")},
                {"status_code": 429, "headers": {"Retry-After": "1"}},
                {"status_code": 401, "json": {"message": "Invalid API key"}},
            ],
        )
        with pytest.raises(ChamelaionAuthError):
            hook.get_request(REQUEST_ID)
        requests_mock.post(GENERATE_URL, status_code=500, json={"message": "boom"})
        with pytest.raises(ChamelaionServerError):
            hook.generate(VIDEO_URL, AUDIO_URL)

        assert requests_mock.call_count == 5
        assert any("retrying" in record.getMessage() for record in caplog.records)  # logs were captured
        assert API_KEY not in caplog.text
        for record in caplog.records:
            assert API_KEY not in record.getMessage()
            assert API_KEY not in repr(record.args)
        captured = capsys.readouterr()
        assert API_KEY not in captured.out
        assert API_KEY not in captured.err

    def test_get_settings_masks_the_key(self, hook: ChamelaionHook, monkeypatch: pytest.MonkeyPatch) -> None:
        import airflow.sdk.log as sdk_log
        from airflow.sdk._shared.secrets_masker import SecretsMasker

        # A fresh masker, and a connection lookup that masks nothing itself (Airflow's own lookup may
        # mask the password too): only what the hook registers can redact the key.
        fresh = SecretsMasker()
        monkeypatch.setattr(sdk_log, "_secrets_masker", lambda: fresh)
        monkeypatch.setattr(
            hook,
            "get_connection",
            lambda conn_id: SimpleNamespace(host=MOCK_BASE_URL, password=API_KEY, port=None),
        )
        assert fresh.redact(f"key={API_KEY}") == f"key={API_KEY}"
        hook.get_settings()
        assert fresh.redact(f"key={API_KEY}") == "key=***"
        assert fresh.redact({"headers": {"x-api-key": API_KEY}}) == {"headers": {"x-api-key": "***"}}

    def test_global_masker_redacts_the_key_after_get_settings(self, hook: ChamelaionHook) -> None:
        from airflow.sdk._shared.secrets_masker import redact

        hook.get_settings()
        assert API_KEY not in str(redact(f"calling with {API_KEY} now"))
        assert redact(f"calling with {API_KEY} now") == "calling with *** now"

    @staticmethod
    def _assert_no_key(error: BaseException) -> None:
        assert API_KEY not in str(error)
        assert API_KEY not in repr(error)
        assert API_KEY not in repr(error.args)
        assert API_KEY not in repr(vars(error))
        assert API_KEY.encode() not in pickle.dumps(error)
        cause = error.__cause__ or error.__context__
        if cause is not None and not error.__suppress_context__:
            assert API_KEY not in repr(cause)


# -- session --------------------------------------------------------------------------------------


class TestSession:
    def test_one_session_per_hook_with_user_agent(self, hook: ChamelaionHook, requests_mock: Mocker) -> None:
        requests_mock.get(REQUEST_URL, json=_request_json())
        hook.get_request(REQUEST_ID)
        hook.get_request(REQUEST_ID)
        assert hook.get_conn() is hook.get_conn()
        user_agents = {r.headers["User-Agent"] for r in requests_mock.request_history}
        assert len(user_agents) == 1
        assert next(iter(user_agents)).startswith("airflow-provider-chamelaion/")

    def test_close_drops_the_session(self, hook: ChamelaionHook) -> None:
        first = hook.get_conn()
        hook.close()
        assert hook.get_conn() is not first
