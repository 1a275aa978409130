"""The Chamelaion HTTP contract in one place: paths, request bodies, response decoding, error mapping.

The hook's sync (requests) and async (aiohttp, on the event loop's shared session) paths both build
requests and read responses through these functions, so the two can never drift apart. Nothing here
knows either HTTP library: answers arrive as status, headers and bytes.
"""

from __future__ import annotations

import email.utils
import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlsplit

from airflow_provider_chamelaion.exceptions import (
    ChamelaionConfigError,
    ChamelaionResponseError,
    error_for_status,
)

GENERATE_PATH = "/v1/lipsync/generate"
GENERATE_WITH_MEDIA_PATH = "/v1/lipsync/generate-with-media"
REQUESTS_PATH = "/v1/lipsync/requests"
API_KEY_HEADER = "x-api-key"
#: Endpoints that exist whatever the account holds: a 404 there means the URL is wrong, not the id.
COLLECTION_PATHS = frozenset({GENERATE_PATH, GENERATE_WITH_MEDIA_PATH, REQUESTS_PATH})

_MAX_MESSAGE_CHARS = 500
_TAG = re.compile(r"<[^>]+>")
# A "/" or a control character; a regex because the triggerer checks every id on every poll.
_PATH_UNSAFE = re.compile(r"[/\x00-\x1f]")


def request_path(request_id: str) -> str:
    """Path of one request; the id (a UUID or a ``reference_id``) is escaped as one path segment."""
    return f"{REQUESTS_PATH}/{quote(request_id, safe='')}"


def missing_prefix_hint(base_url: str, path: str) -> str:
    """What a 404 on a collection endpoint almost always means: the base URL lacks its path prefix."""
    return (
        f" (called {base_url}{path}, which does not exist: the connection's Base URL {base_url!r} "
        "probably lacks its path prefix, e.g. '/api' as in https://api.chamelaion.com/api)"
    )


def host_and_port(netloc: str) -> str:
    """``netloc`` without its user info: ``cdn.example.com:8443`` of ``editor:pw@cdn.example.com:8443``.

    A URL's user info (``user:password@``) is a credential: it goes into no log line, error message or
    lineage dataset, only into the request itself.

    :param netloc: a URL's network location (``urlsplit(url).netloc``).
    """
    return netloc.rpartition("@")[2]


def url_for_log(url: str | None) -> str | None:
    """``url`` without its user info, query string and fragment, for log lines and error messages.

    ``output_url`` is a signed URL: its query (``sig=...``) lets anyone holding it fetch the output until
    it expires, so logs show where it points and that it is signed, never the signature; user info
    (``user:password@``) is shown as ``***@``. XCom keeps the whole URL (downstream tasks need it).

    :param url: any URL (``None`` and ``""`` are returned as they are).
    """
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed "[" in the host: show no more than the scheme
        return (
            url.split("://", 1)[0] + "://<unparsable URL hidden>"
            if "://" in url
            else "<unparsable URL hidden>"
        )
    if "@" in parts.netloc:
        parts = parts._replace(netloc="***@" + host_and_port(parts.netloc))
    if not parts.query and not parts.fragment:
        return parts.geturl()
    return parts._replace(query="", fragment="").geturl() + "?<signed query hidden>"


def validate_http_url(value: object, field: str) -> str:
    """Return ``value`` if it is an absolute http(s) URL with a host and a valid port, else raise naming ``field``.

    The one URL check of the single operator, the batch catalogue and the hook: every URL that reaches a
    job is checked here before anything is paid for. Messages show the URL as :func:`url_for_log` does.

    :param value: the URL to check.
    :param field: what to call it in the message, e.g. ``video_url`` or ``row 7: audio_url``.
    :return: the URL, stripped of surrounding whitespace.
    """
    if not isinstance(value, str) or not value.strip():
        raise ChamelaionConfigError(f"{field} must be a non-empty http(s) URL, got {value!r}")
    text = value.strip()
    shown = repr(url_for_log(text))
    try:
        parts = urlsplit(text)
    except ValueError as err:  # an unbalanced "[" or "]" in the host
        raise ChamelaionConfigError(f"{field} {shown} is not a valid URL ({err})") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ChamelaionConfigError(
            f"{field} must be an absolute http:// or https:// URL the Chamelaion API can fetch, got "
            f"{shown}; to send a local or object-storage file, use upload mode instead"
        )
    if not parts.hostname:
        raise ChamelaionConfigError(
            f"{field} {shown} has no host; give one, e.g. https://cdn.example.com/v.mp4"
        )
    _check_port(parts.netloc, field, shown)
    return text


def _port_text(netloc: str) -> str:
    """The port as written in ``netloc`` (``""`` when none): after the last ``:`` outside an IPv6 ``[...]``."""
    tail = host_and_port(netloc).rpartition("]")[2]
    return tail.rpartition(":")[2] if ":" in tail else ""


def _check_port(netloc: str, field: str, shown: str) -> None:
    """Raise naming ``field`` unless the port of ``netloc``, if any, is a number from 1 to 65535."""
    # Read from the text, not SplitResult.port: that raises a bare ValueError out of range, and which
    # digits it accepts differs between Python versions.
    port = _port_text(netloc)
    if port == "" or (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        return  # no port (or an empty one, "host:"): the scheme's default
    named = port if port.isascii() and port.isdigit() else repr(port)
    raise ChamelaionConfigError(
        f"{field} {shown} has port {named}, which is not a port number: use 1 to 65535, or none for the "
        "scheme's default"
    )


def validate_reference_id(value: object, field: str = "reference_id") -> str:
    """Return ``value`` if it can be used as a ``reference_id``, else raise naming ``field``.

    A ``/``, a control character, ``.`` or ``..`` is refused because the API looks requests up by
    ``reference_id`` in a URL path segment, and HTTP clients and servers rewrite ``.`` and ``..``
    segments (a redirect, the list page or a 404), so such a look-up would never find the job.
    """
    if not isinstance(value, str) or not value.strip():
        raise ChamelaionConfigError(f"{field} must be a non-empty string, got {value!r}")
    if _PATH_UNSAFE.search(value):
        raise ChamelaionConfigError(
            f"{field} {value!r} contains '/' or a control character; the API looks requests up by "
            "reference_id in a URL path, so use letters, digits and -_.: only"
        )
    if value in (".", ".."):
        raise ChamelaionConfigError(
            f"{field} {value!r} cannot be used: the API looks requests up by reference_id in a URL path, "
            "where '.' and '..' mean 'this' and 'the parent' path; use letters, digits and -_.: only"
        )
    return value


def validate_optional_bool(value: object, field: str) -> bool | None:
    """Return ``value`` if it is ``True``, ``False`` or ``None``, else raise naming ``field``."""
    if value is not None and not isinstance(value, bool):
        raise ChamelaionConfigError(f"{field} must be True, False or None, got {value!r}")
    return value


def list_params(
    *, limit: int | None = None, offset: int | None = None, reference_id: str | None = None
) -> dict[str, str | int]:
    """Query parameters of ``GET /v1/lipsync/requests``; only those given."""
    params: dict[str, str | int] = {}
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ChamelaionConfigError(f"limit must be a whole number of at least 1, got {limit!r}")
        params["limit"] = limit
    if offset is not None:
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ChamelaionConfigError(f"offset must be a whole number of at least 0, got {offset!r}")
        params["offset"] = offset
    if reference_id is not None:
        if not isinstance(reference_id, str) or not reference_id:
            raise ChamelaionConfigError(f"reference_id must be a non-empty string, got {reference_id!r}")
        params["reference_id"] = reference_id
    return params


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date); ``None`` if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def error_message(content: bytes, content_type: str | None) -> str:
    """The API's own message from an error body, or a short readable description of the body."""
    text = content.decode("utf-8", errors="replace").strip()
    if not text:
        return "empty response body"
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    if isinstance(payload, Mapping):
        for key in ("message", "error_message", "detail", "error"):
            value = payload.get(key)
            if isinstance(value, str) and value:
                return value[:_MAX_MESSAGE_CHARS]
            if value:
                return json.dumps(value)[:_MAX_MESSAGE_CHARS]
        return json.dumps(payload)[:_MAX_MESSAGE_CHARS]
    if payload is not None:
        return json.dumps(payload)[:_MAX_MESSAGE_CHARS]
    # Not JSON: most likely an HTML error page from a proxy. Keep it readable and short.
    flat = " ".join(_TAG.sub(" ", text).split())
    kind = (content_type or "unknown content type").split(";")[0]
    return f"non-JSON response ({kind}): {flat[:_MAX_MESSAGE_CHARS]}"


def decode_response(
    status_code: int,
    headers: Mapping[str, str],
    content: bytes,
    *,
    method: str,
    path: str,
    base_url: str | None = None,
) -> Any:
    """Return the JSON of a 2xx response, or raise the typed error for anything else.

    :param base_url: the connection's base URL; a 404 on a collection endpoint then names the URL called.
    """
    if status_code >= 300:
        message = error_message(content, headers.get("content-type"))
        if status_code == 404 and path in COLLECTION_PATHS and base_url is not None:
            message += missing_prefix_hint(base_url, path)
        raise error_for_status(
            status_code,
            message,
            method=method,
            path=path,
            retry_after=parse_retry_after(headers.get("retry-after")),
        )
    try:
        return json.loads(content)
    except ValueError:
        raise ChamelaionResponseError(
            f"the answer is not JSON: {error_message(content, headers.get('content-type'))}",
            status_code=status_code,
            method=method,
            path=path,
        ) from None


def read_request_id(payload: Any, *, method: str, path: str) -> str:
    """The ``request_id`` of a generate answer, or a typed error if it has none."""
    request_id = payload.get("request_id") if isinstance(payload, Mapping) else None
    if not isinstance(request_id, str) or not request_id:
        raise ChamelaionResponseError(
            f"answer has no request_id: {json.dumps(payload)[:_MAX_MESSAGE_CHARS]}",
            status_code=200,
            method=method,
            path=path,
        )
    return request_id


def parse_model(parser: Any, payload: Any, *, method: str, path: str) -> Any:
    """Run ``parser(payload)`` and turn a shape error into a typed :class:`ChamelaionResponseError`."""
    try:
        return parser(payload)
    except (ValueError, TypeError, KeyError) as err:
        raise ChamelaionResponseError(
            f"unexpected answer shape: {err}", status_code=200, method=method, path=path
        ) from None
