"""What the hook tests share: the mocked API's URLs, canned answers and small readers of what was sent."""

from __future__ import annotations

import email.parser
import email.policy
from email.message import Message
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import urllib3
from requests_mock import Mocker

from airflow_provider_chamelaion.client.models import LipsyncRequest
from tests.harness.constants import MOCK_BASE_URL

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


def _parse_multipart(content_type: str, body: bytes) -> list[Message]:
    raw = f"Content-Type: {content_type}\r\n\r\n".encode() + body
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    assert message.is_multipart()
    assert not message.defects
    return list(message.iter_parts())


def _completed(output_url: str | None = STORAGE_URL, status: str = "completed") -> LipsyncRequest:
    return LipsyncRequest(id=REQUEST_ID, status=status, output_url=output_url)


def _refused() -> requests.exceptions.ConnectionError:
    """What requests raises when nothing listens on the port: the request was never sent."""
    pool = urllib3.HTTPSConnectionPool("api.chamelaion.test")
    connection = urllib3.connection.HTTPSConnection("api.chamelaion.test")
    reason = urllib3.exceptions.NewConnectionError(
        connection, "Failed to establish a new connection: refused"
    )
    return requests.exceptions.ConnectionError(urllib3.exceptions.MaxRetryError(pool, "/api", reason))


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
