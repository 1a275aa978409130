"""ChamelaionHook: the connection and every Chamelaion API call.

Two HTTP stacks, one per world: ``requests`` for the sync path (workers: submit, upload, download,
list) and ``aiohttp`` for the async path (the triggerer: ``aget_request``), always through the event
loop's shared session (:mod:`~airflow_provider_chamelaion.client.session`). Both libraries' failures
are classified here, by ``transport_error``, into one :class:`~airflow_provider_chamelaion.exceptions.ChamelaionTransportError`
that says whether the server may have seen the request; retries are then decided by the one
:class:`~airflow_provider_chamelaion.client.retry.RetryPolicy`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote, urlsplit

import aiohttp
import requests

from airflow_provider_chamelaion import __version__
from airflow_provider_chamelaion.client.inputs import JobInputs
from airflow_provider_chamelaion.client.media import (
    MediaDestination,
    MediaSource,
    atomic_write,
    check_destination,
    inspect_source,
    open_source,
    resolve_destination,
    writes_in_one_put,
)
from airflow_provider_chamelaion.client.models import LipsyncRequest, RequestPage, newest_first
from airflow_provider_chamelaion.client.multipart import FilePart, MultipartBody
from airflow_provider_chamelaion.client.retry import RetryPolicy
from airflow_provider_chamelaion.client.settings import (
    DEFAULT_CONN_ID,
    ApiSettings,
    connection_env_var,
    missing_connection_error,
    origin_of,
    settings_from_connection,
)
from airflow_provider_chamelaion.client.wire import (
    API_KEY_HEADER,
    GENERATE_PATH,
    GENERATE_WITH_MEDIA_PATH,
    REQUESTS_PATH,
    decode_response,
    list_params,
    parse_model,
    read_request_id,
    request_path,
    validate_reference_id,
)
from airflow_provider_chamelaion.exceptions import (
    ChamelaionAPIError,
    ChamelaionAuthError,
    ChamelaionError,
    ChamelaionNotFoundError,
    ChamelaionTLSError,
    ChamelaionTransportError,
)
from airflow_provider_chamelaion.utils.progress import QuietLog, TransferProgress
from airflow_provider_chamelaion.utils.secrets import (
    aget_connection,
    amask_secret,
    get_connection,
    mask_secret,
)
from airflow_provider_chamelaion.version_compat import AirflowNotFoundException, BaseHook

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

    from airflow_provider_chamelaion.client.session import SharedSessionClient
    from airflow_provider_chamelaion.version_compat import ObjectStoragePath

USER_AGENT = f"airflow-provider-chamelaion/{__version__}"
_QUERY = re.compile(r"\?[^\s)'\"]*")
DOWNLOAD_CHUNK_SIZE = 1 << 20


class SavedOutput(NamedTuple):
    """An output written by :meth:`ChamelaionHook.save_output`: where, and how many bytes."""

    path: Path | ObjectStoragePath
    size: int


class _KeySafeSession(requests.Session):
    """A session that drops the API key whenever a redirect leaves the origin it was meant for.

    requests strips ``Authorization`` on such redirects but knows nothing of ``x-api-key``.
    """

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)
        previous_url = response.request.url if response.request is not None else None
        if (
            previous_url
            and prepared_request.url
            and origin_of(previous_url) != origin_of(prepared_request.url)
        ):
            prepared_request.headers.pop(API_KEY_HEADER, None)


#: aiohttp failures that certainly happened before the request left: no connection was established
#: (refused, DNS, TLS handshake, proxy) or establishing one timed out (``sock_connect``).
_AIOHTTP_NEVER_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
#: What the async path turns into a ChamelaionTransportError: every aiohttp client failure, and the
#: bare timeout asyncio raises when a deadline passes outside aiohttp's own timers.
ASYNC_TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


def _never_sent(err: BaseException) -> bool:
    """Whether ``err`` (from requests or aiohttp) proves the server never received the request."""
    if isinstance(err, (requests.exceptions.ConnectTimeout, *_AIOHTTP_NEVER_SENT)):
        return True
    if isinstance(err, requests.exceptions.ConnectionError):
        reason = getattr(err.args[0], "reason", None) if err.args else None
        return type(reason).__name__ in ("NewConnectionError", "ConnectTimeoutError", "NameResolutionError")
    return False


#: What OpenSSL says when the server answers a TLS handshake in plain HTTP (an http server, https URL).
_PLAIN_HTTP_ANSWER = re.compile(r"WRONG_VERSION_NUMBER|record layer failure|packet length too long", re.I)
_UNTRUSTED_CERTIFICATE = re.compile(r"CERTIFICATE_VERIFY_FAILED", re.I)
#: What to fix after a TLS handshake no retry can make succeed (the hook then names the connection).
PLAIN_HTTP_HINT = (
    "The server answered in plain HTTP, not TLS: for a plain-HTTP server (such as the local simulator) "
    "set the connection's extra scheme=http (URI form: chamelaion://:KEY@host:port/api?scheme=http), "
    "or give its Base URL (host) with http://."
)
UNTRUSTED_CERTIFICATE_HINT = (
    "The server's TLS certificate is not trusted here: give the server a valid certificate, or add "
    "its certificate authority to the trust store of the workers and the triggerer."
)


def _tls_hint(err: BaseException, detail: str) -> str | None:
    """What to fix when ``err`` is a TLS handshake that no retry can make succeed, else ``None``."""
    if not isinstance(err, (requests.exceptions.SSLError, aiohttp.ClientSSLError)):
        return None
    if _PLAIN_HTTP_ANSWER.search(detail):
        return PLAIN_HTTP_HINT
    if isinstance(err, aiohttp.ClientConnectorCertificateError) or _UNTRUSTED_CERTIFICATE.search(detail):
        return UNTRUSTED_CERTIFICATE_HINT
    return None  # e.g. a handshake cut short: may work next time


def transport_error(err: BaseException, method: str, path: str) -> ChamelaionTransportError:
    """Map a requests or aiohttp failure to a typed error that says whether the server may have seen it.

    Everything not proven unsent (a read timeout, a reset or cut connection, a truncated body) counts as
    sent: a POST that may have reached the server is never sent again by the hook. A TLS handshake
    that cannot succeed (a plain-HTTP server, an untrusted certificate) is a
    :class:`~airflow_provider_chamelaion.exceptions.ChamelaionTLSError`, which is not retried.
    """
    # The cause's text names host and path; query strings are cut (a signed output URL carries its
    # signature there) and it never holds the key, which travels only in a header.
    text = _QUERY.sub("", str(err) or "no detail")
    detail = text[:300]
    if (hint := _tls_hint(err, text)) is not None:
        error = ChamelaionTLSError(f"{type(err).__name__}: {detail}", method=method, path=path)
        error.add_hint(hint)
        return error
    return ChamelaionTransportError(
        f"{type(err).__name__}: {detail}", method=method, path=path, sent=not _never_sent(err)
    )


class ChamelaionHook(BaseHook):
    """Talks to the Chamelaion lip-sync API.

    The connection holds the API key in ``password`` and the base URL in ``host`` (a full URL such as
    ``https://api.chamelaion.com/api``; empty means that one, no scheme means https, or the extra
    ``scheme``). A URI-form connection (``chamelaion://:KEY@api.chamelaion.com/api``, which Airflow
    stores as host and schema) gives the same base URL. The extra ``reference_namespace`` goes into
    every derived ``reference_id`` (see :mod:`airflow_provider_chamelaion.utils.job_identity`).

    Every GET is retried on connection errors, timeouts, 429 (honouring ``Retry-After``) and
    500/502/503/504 with exponential backoff and jitter; POSTs are retried only when the server
    certainly did not act on them (see :mod:`airflow_provider_chamelaion.client.retry`). Other errors raise a
    typed :class:`~airflow_provider_chamelaion.exceptions.ChamelaionAPIError` at once.

    :param chamelaion_conn_id: the Airflow connection to use.
    :param max_attempts: attempts per call, the first included (overrides ``retry_policy``'s).
    :param retry_policy: the full retry policy; the default is ``RetryPolicy()``.
    :param timeout: (connect, read) timeout in seconds of every API call.
    :param download_timeout: (connect, read) timeout of output downloads; the read timeout applies
        between two chunks, not to the whole file.
    """

    conn_name_attr = "chamelaion_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "chamelaion"
    hook_name = "Chamelaion"

    def __init__(
        self,
        chamelaion_conn_id: str = default_conn_name,
        *,
        max_attempts: int | None = None,
        retry_policy: RetryPolicy | None = None,
        timeout: Sequence[float] = (10.0, 60.0),
        download_timeout: Sequence[float] = (10.0, 120.0),
        settings: ApiSettings | None = None,
        quiet: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.chamelaion_conn_id = chamelaion_conn_id
        policy = retry_policy or RetryPolicy()
        if max_attempts is not None:
            policy = dataclasses.replace(policy, max_attempts=max_attempts)
        self.retry_policy = policy
        # Tuples, also when they come back from a trigger's JSON kwargs (hook_params) as lists.
        self.timeout = (float(timeout[0]), float(timeout[1]))
        self.download_timeout = (float(download_timeout[0]), float(download_timeout[1]))
        self._settings: ApiSettings | None = settings
        self.quiet = quiet
        self._session: requests.Session | None = None
        # The last request id this hook checked and its path: a trigger polls one id all its life,
        # and checking and escaping it again on every poll bought nothing.
        self._last_request_path: tuple[str, str] = ("", "")
        self._key_header: Mapping[str, str] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(chamelaion_conn_id={self.chamelaion_conn_id!r})"

    @property
    def _item_log(self) -> Any:
        """Where the lines about one job go: the hook's log, or DEBUG for a ``quiet`` (batch) hook."""
        return QuietLog(self.log) if self.quiet else self.log

    # -- connection -------------------------------------------------------------------------------

    def get_settings(self) -> ApiSettings:
        """Base URL and API key from the connection (looked up once per hook)."""
        if self._settings is None:
            try:
                conn = get_connection(self, self.chamelaion_conn_id)
            except AirflowNotFoundException:
                raise missing_connection_error(self.chamelaion_conn_id) from None
            settings = settings_from_connection(conn, self.chamelaion_conn_id)
            mask_secret(settings.api_key)
            self._settings = settings
        return self._settings

    async def aget_settings(self) -> ApiSettings:
        """Async :meth:`get_settings`: no sync database or supervisor call on the event loop."""
        if self._settings is None:
            try:
                conn = await aget_connection(self, self.chamelaion_conn_id)
            except AirflowNotFoundException:
                raise missing_connection_error(self.chamelaion_conn_id) from None
            settings = settings_from_connection(conn, self.chamelaion_conn_id)
            await amask_secret(settings.api_key)
            self._settings = settings
        return self._settings

    def get_conn(self) -> requests.Session:
        """The hook's ``requests`` session (one per hook, so connections are reused)."""
        if self._session is None:
            session = _KeySafeSession()
            session.headers["User-Agent"] = USER_AGENT
            self._session = session
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def _explain(self, err: ChamelaionAPIError) -> None:
        """Add which connection to fix, and where, to an error only the connection can fix."""
        conn_id = self.chamelaion_conn_id
        where = f"or in {connection_env_var(conn_id)} if the connection comes from the environment"
        if isinstance(err, ChamelaionAuthError):
            err.add_hint(
                f"The API did not accept the API key of Airflow connection {conn_id!r}: put the right key "
                f"in the connection's password (the 'API key' field of its form in the UI), {where}"
            )
        elif isinstance(err, ChamelaionTLSError):
            err.add_hint(f"Fix Airflow connection {conn_id!r} in the UI, {where}")

    def _auth_headers(self, url: str, settings: ApiSettings) -> Mapping[str, str]:
        """The API key header, only for URLs on the API's own origin (callers copy, never change it)."""
        # The prefix test is the common case (an API path), without parsing a URL on every poll.
        same_origin = url.startswith(settings.base_url + "/") or origin_of(url) == settings.origin
        if not same_origin:
            return {}
        if self._key_header is None or self._key_header[API_KEY_HEADER] != settings.api_key:
            # Read-only and built once: a poll sends it without building a dict.
            self._key_header = MappingProxyType({API_KEY_HEADER: settings.api_key})
        return self._key_header

    def _request_path(self, request_id: str) -> str:
        """The path of one request, its id checked (the last one remembered)."""
        last_id, last_path = self._last_request_path
        if request_id != last_id or not last_id:
            last_path = request_path(validate_reference_id(request_id, "request_id"))
            self._last_request_path = (request_id, last_path)
        return last_path

    # -- the sync path ----------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """One HTTP call, no retry: JSON on success, a typed error otherwise."""
        settings = self.get_settings()
        url = settings.base_url + path
        try:
            response = self.get_conn().request(
                method,
                url,
                params=params,
                json=json,
                data=data,
                headers={**self._auth_headers(url, settings), **(headers or {})},
                timeout=self.timeout,
                allow_redirects=False,
            )
            content = response.content
        except requests.RequestException as err:
            error = transport_error(err, method, path)
            self._explain(error)
            raise error from None
        try:
            return decode_response(
                response.status_code,
                response.headers,
                content,
                method=method,
                path=path,
                base_url=settings.base_url,
            )
        except ChamelaionAuthError as err:
            self._explain(err)
            raise

    def _call(self, method: str, path: str, *, idempotent: bool, **kwargs: Any) -> Any:
        return self.retry_policy.call(
            lambda: self._send(method, path, **kwargs), idempotent=idempotent, what=f"{method} {path}"
        )

    def generate(
        self,
        video_url: str,
        audio_url: str,
        *,
        reconcile: Callable[[BaseException], str | None] | None = None,
        **options: Any,
    ) -> str:
        """Start a lip-sync job from two http(s) URLs (``POST /v1/lipsync/generate``).

        :param options: ``reference_id`` and the API's options (``disable_active_speaker_detection``), as
            :class:`~airflow_provider_chamelaion.client.inputs.JobInputs` takes them; checked first.
        :param reconcile: as for :meth:`submit`.
        :return: the new request's id (or the one ``reconcile`` found).
        """
        return self.submit(
            JobInputs.of(video_url=video_url, audio_url=audio_url, **options), reconcile=reconcile
        )

    def submit(
        self, inputs: JobInputs, *, reconcile: Callable[[BaseException], str | None] | None = None
    ) -> str:
        """Start a lip-sync job from checked :class:`JobInputs` (``POST /v1/lipsync/generate``).

        :param reconcile: called when the POST may have created a job but its answer was lost
            (see :meth:`RetryPolicy.call <airflow_provider_chamelaion.client.retry.RetryPolicy.call>`):
            return that job's id if it finds it, or ``None`` to have the POST sent again. Without it, such
            a POST is never sent again and its error is raised.
        :return: the new request's id (or the one ``reconcile`` found).
        """
        body = inputs.body()

        def post() -> str:
            payload = self._send("POST", GENERATE_PATH, json=body)
            request_id = read_request_id(payload, method="POST", path=GENERATE_PATH)
            self._item_log.info(
                "Submitted Chamelaion lip-sync request %s (reference_id %s)", request_id, inputs.reference_id
            )
            return request_id

        return self.retry_policy.call(
            post, idempotent=False, what=f"POST {GENERATE_PATH}", reconcile=reconcile
        )

    def generate_with_media(self, video: MediaSource, audio: MediaSource) -> str:
        """Start a lip-sync job by uploading two files (``POST /v1/lipsync/generate-with-media``).

        Each of ``video`` and ``audio`` is a local path, an object-storage path (``ObjectStoragePath``
        or a URI such as ``s3://bucket/key``) or an open, seekable binary file. The body is streamed:
        memory use does not grow with file size.

        :return: the new request's id.
        """
        infos = {"video": inspect_source(video, "video"), "audio": inspect_source(audio, "audio")}
        self.get_settings()  # a bad connection fails before a file is opened
        path = GENERATE_WITH_MEDIA_PATH

        def upload() -> Any:
            # Files are (re)opened per attempt: a 429 retry must send the whole body again.
            with open_source(video) as video_file, open_source(audio) as audio_file:
                progress = TransferProgress(
                    "Uploading",
                    f"{infos['video'].filename} and {infos['audio'].filename}",
                    infos["video"].size + infos["audio"].size,
                    self._item_log,
                )
                body = MultipartBody(
                    [
                        FilePart("video", infos["video"], video_file),
                        FilePart("audio", infos["audio"], audio_file),
                    ],
                    on_chunk=progress.advance,
                )
                answer = self._send("POST", path, data=body, headers={"Content-Type": body.content_type})
                progress.finish()
                return answer

        payload = self.retry_policy.call(upload, idempotent=False, what=f"POST {path}")
        request_id = read_request_id(payload, method="POST", path=path)
        self._item_log.info(
            "Uploaded %s (%d bytes) and %s (%d bytes): Chamelaion lip-sync request %s",
            infos["video"].filename,
            infos["video"].size,
            infos["audio"].filename,
            infos["audio"].size,
            request_id,
        )
        return request_id

    def get_request(self, request_id: str) -> LipsyncRequest:
        """One request, by request UUID or by ``reference_id`` (``GET /v1/lipsync/requests/{id}``)."""
        path = self._request_path(request_id)
        payload = self._call("GET", path, idempotent=True)
        return parse_model(LipsyncRequest.from_api, payload, method="GET", path=path)

    def list_requests(
        self, *, limit: int | None = None, offset: int | None = None, reference_id: str | None = None
    ) -> RequestPage:
        """One page of the account's requests (``GET /v1/lipsync/requests``)."""
        params = list_params(limit=limit, offset=offset, reference_id=reference_id)
        payload = self._call("GET", REQUESTS_PATH, idempotent=True, params=params)
        return parse_model(RequestPage.from_api, payload, method="GET", path=REQUESTS_PATH)

    def iter_requests(
        self, *, reference_id: str | None = None, page_size: int = 100
    ) -> Iterator[LipsyncRequest]:
        """Every matching request, paging with limit/offset until ``total``; no id is yielded twice."""
        list_params(limit=page_size)  # validate before the first call
        seen: set[str] = set()
        offset = 0
        while True:
            page = self.list_requests(limit=page_size, offset=offset, reference_id=reference_id)
            for request in page.data:
                if request.id not in seen:
                    seen.add(request.id)
                    yield request
            offset += len(page.data)
            if not page.data or offset >= page.total:
                return

    def find_requests(self, reference_id: str) -> list[LipsyncRequest]:
        """Every request with exactly this ``reference_id``, newest first.

        "Newest" compares the parsed ``created_at`` times (offsets honoured); a request without a
        readable time counts as the oldest, and ties keep the API's listing order.
        """
        matches = [r for r in self.iter_requests(reference_id=reference_id) if r.reference_id == reference_id]
        return newest_first(matches)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form, for Airflow 2.11-3.1 (3.2+ reads it from the provider info and, finding it
        there, never calls this deprecated hook method)."""
        from airflow_provider_chamelaion.get_provider_info import hook_field_behaviour

        return hook_field_behaviour()

    def test_connection(self) -> tuple[bool, str]:
        """Airflow's "Test" button: one cheap authenticated call (a one-item list)."""
        try:
            page = self.list_requests(limit=1)
        except ChamelaionError as err:
            return False, str(err)
        except Exception as err:  # the UI wants a message, not a traceback
            return False, f"{type(err).__name__}: {err}"
        return True, f"Connected to Chamelaion at {self.get_settings().base_url} ({page.total} requests)"

    # -- downloads --------------------------------------------------------------------------------

    def download_output(
        self, request: str | LipsyncRequest, destination: MediaDestination, *, as_file: bool = False
    ) -> Path | ObjectStoragePath:
        """Download a finished request's output to a local or object-storage path.

        Streamed in 1 MiB chunks to a temporary sibling and renamed into place only once complete
        (and, when the server sent ``Content-Length``, only if the size matches): on any failure
        nothing is left at ``destination``. A dropped connection is retried like any GET. If the
        storage host refuses the output URL (403/404: a signed URL that expired), the request is
        fetched again for a fresh URL, once. The API key is sent only when the output URL is on the
        API's own origin. An empty (0-byte) output is an error naming the request: it is never
        written.

        :param request: a request id, ``reference_id`` or :class:`LipsyncRequest`.
        :param destination: a file path; an existing directory (or a path ending in ``/``) gets the
            output's own file name.
        :param as_file: ``destination`` is the file to write: no check for a directory there (one
            storage call saved per output on object storage; the batch download uses it).
        :return: the path written.
        """
        return self.save_output(request, destination, as_file=as_file).path

    def save_output(
        self, request: str | LipsyncRequest, destination: MediaDestination, *, as_file: bool = False
    ) -> SavedOutput:
        """:meth:`download_output`, also returning the bytes written (the batch download records them).

        :param request: a request id, ``reference_id`` or :class:`LipsyncRequest`.
        :param destination: as for :meth:`download_output`.
        :param as_file: as for :meth:`download_output`.
        :return: the path written and its size in bytes.
        """
        check_destination(destination)  # before the request is fetched
        lipsync = request if isinstance(request, LipsyncRequest) else self.get_request(request)
        target = resolve_destination(destination, _output_filename(lipsync), as_file=as_file)
        refreshed = False
        while True:
            if not lipsync.output_url:
                raise ChamelaionError(
                    f"Chamelaion lip-sync request {lipsync.id} has no output_url yet (status "
                    f"{lipsync.status!r}); wait for it to complete before downloading"
                )
            try:
                size = self.retry_policy.call(
                    functools.partial(self._download_once, lipsync.output_url, target, lipsync.id),
                    idempotent=True,
                    what=f"download of {lipsync.id}",
                )
                if not writes_in_one_put(target):
                    # A put that returned has stored the whole object (these stores are strongly
                    # consistent); a rename or a move is checked, which costs a HEAD on object storage.
                    _check_written(target, lipsync.id)
                return SavedOutput(target, size)
            except (ChamelaionAuthError, ChamelaionNotFoundError) as err:
                if refreshed:
                    raise
                refreshed = True
                self._item_log.warning(
                    "Output URL of %s was refused (%s); fetching the request again for a fresh URL",
                    lipsync.id,
                    err.status_code,
                )
                lipsync = self.get_request(lipsync.id)

    def _download_once(self, url: str, target: Path | ObjectStoragePath, request_id: str) -> int:
        """One attempt: stream ``url`` into ``target`` atomically; return the bytes written."""
        settings = self.get_settings()
        path = urlsplit(url).path  # no query string: signed URLs carry their signature there
        headers = {"Accept-Encoding": "identity", **self._auth_headers(url, settings)}
        try:
            with self.get_conn().get(
                url, headers=headers, stream=True, timeout=self.download_timeout
            ) as response:
                if response.status_code >= 300:
                    decode_response(
                        response.status_code, response.headers, response.content, method="GET", path=path
                    )
                expected = response.headers.get("Content-Length")
                progress = TransferProgress(
                    "Downloading",
                    f"output of {request_id} to {target}",
                    int(expected) if expected and expected.isdigit() else None,
                    self._item_log,
                )
                written = 0
                with atomic_write(target) as handle:
                    for chunk in response.iter_content(DOWNLOAD_CHUNK_SIZE):
                        handle.write(chunk)
                        written += len(chunk)
                        progress.advance(len(chunk))
                    encoded = bool(response.headers.get("Content-Encoding"))
                    if expected is not None and not encoded and written != int(expected):
                        raise ChamelaionTransportError(
                            f"download ended after {written} of {expected} bytes", method="GET", path=path
                        )
                    if written == 0:
                        # Raised inside the atomic write: the empty file never takes the name. Not
                        # retried: the API answered in full, and asking again gives the same nothing.
                        raise ChamelaionError(
                            f"Chamelaion lip-sync request {request_id} is completed but the API returned an "
                            f"empty output (0 bytes); nothing was written at {target}"
                        )
                progress.finish()
                return written
        except requests.RequestException as err:
            raise transport_error(err, "GET", path) from None

    # -- the async path (triggers) ----------------------------------------------------------------

    def shared_async_client(self) -> AbstractAsyncContextManager[SharedSessionClient]:
        """A client on the event loop's shared aiohttp session, with this hook's timeouts.

        The one async client of the hook: every trigger on the loop shares one ``aiohttp`` session
        (closed when the last user leaves), which keeps a thousand waits near what a bare aiohttp GET
        costs and free of cyclic garbage (see :mod:`airflow_provider_chamelaion.client.session`). Use it with ``async with`` and pass it
        as ``client=`` to :meth:`aget_request` to keep one client for a whole wait.
        """
        from airflow_provider_chamelaion.client.session import shared_client

        return shared_client(self.timeout, USER_AGENT)

    def _acall(
        self,
        method: str,
        path: str,
        *,
        client: SharedSessionClient | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Awaitable[Any]:
        """One async API call under the retry policy (an awaitable).

        Not a coroutine itself: a polling trigger holds a client and the settings are loaded after
        its first poll, so every later poll goes straight to the retry policy, one coroutine fewer.
        """
        if client is None or self._settings is None:
            return self._acall_preparing(method, path, client=client, params=params)
        return self.retry_policy.acall(
            self._aattempt,
            client,
            method,
            path,
            params,
            self._settings,
            idempotent=True,
            what=f"{method} {path}",
        )

    async def _acall_preparing(
        self,
        method: str,
        path: str,
        *,
        client: SharedSessionClient | None,
        params: Mapping[str, Any] | None,
    ) -> Any:
        """:meth:`_acall` that first loads the settings or joins the loop's shared session."""
        await self.aget_settings()  # a bad connection fails before a session is opened
        if client is None:
            async with self.shared_async_client() as own:
                return await self._acall(method, path, client=own, params=params)
        return await self._acall(method, path, client=client, params=params)

    async def _aattempt(
        self,
        client: SharedSessionClient,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        settings: ApiSettings,
    ) -> Any:
        """One async HTTP call, no retry: JSON on success, a typed error otherwise."""
        url = settings.base_url + path
        try:
            answer = await client.request(
                method, url, params=params, headers=self._auth_headers(url, settings)
            )
        except ASYNC_TRANSPORT_ERRORS as err:
            raise transport_error(err, method, path) from None
        return decode_response(
            answer.status, answer.headers, answer.body, method=method, path=path, base_url=settings.base_url
        )

    async def aget_request(
        self, request_id: str, *, client: SharedSessionClient | None = None
    ) -> LipsyncRequest:
        """Async :meth:`get_request` (same retry policy), over aiohttp.

        :param client: a client from :meth:`shared_async_client`, to reuse across polls. Without one,
            the call joins the event loop's shared session for its duration (a new session, closed
            after the call, when nothing else on the loop holds one).
        """
        path = self._request_path(request_id)
        try:
            payload = await self._acall("GET", path, client=client)
        except (ChamelaionAuthError, ChamelaionTLSError) as err:  # neither is retried: one call
            self._explain(err)
            raise
        return parse_model(LipsyncRequest.from_api, payload, method="GET", path=path)

    async def alist_requests(
        self,
        *,
        limit: int | None = None,
        offset: int | None = None,
        reference_id: str | None = None,
        client: SharedSessionClient | None = None,
    ) -> RequestPage:
        """Async :meth:`list_requests` (same retry policy); ``client`` as for :meth:`aget_request`."""
        params = list_params(limit=limit, offset=offset, reference_id=reference_id)
        try:
            payload = await self._acall("GET", REQUESTS_PATH, client=client, params=params)
        except (ChamelaionAuthError, ChamelaionTLSError) as err:
            self._explain(err)
            raise
        return parse_model(RequestPage.from_api, payload, method="GET", path=REQUESTS_PATH)


def _output_filename(request: LipsyncRequest) -> str:
    """A safe file name for the output: the URL's last path segment, percent-decoded.

    Falls back to ``<request id>.mp4`` when that segment is empty, ``.``/``..``, or holds a path
    separator or control character once decoded, so a strange URL can never write outside (or
    "into") the destination directory.
    """
    segment = urlsplit(request.output_url or "").path.rsplit("/", 1)[-1]
    for name in (unquote(segment).strip(), f"{request.id}.mp4"):
        if name not in ("", ".", "..", ".mp4") and not any(char in "/\\" or ord(char) < 32 for char in name):
            return name
    return "output.mp4"


def _check_written(target: Path | ObjectStoragePath, request_id: str) -> None:
    """Fail loudly unless the output is now a file at ``target``, where the caller will say it is."""
    try:
        written = target.is_file()
    except Exception as err:
        raise ChamelaionError(f"could not check the download of {request_id} at {target}: {err}") from None
    if not written:
        raise ChamelaionError(
            f"the download of Chamelaion lip-sync request {request_id} reported success but {target} "
            "is not a file; nothing was written there"
        )


__all__ = ["ChamelaionHook"]
