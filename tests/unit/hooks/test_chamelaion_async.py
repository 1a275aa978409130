"""The async (aiohttp) path of ChamelaionHook over real loopback sockets: same wire format and retry
decisions as the sync path, aiohttp's failures classified with the right ``sent`` flag, and the loop's
shared session used (and closed) as documented."""

from __future__ import annotations

import asyncio
import pickle
import threading
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from airflow_provider_chamelaion.client import session as shared_session
from airflow_provider_chamelaion.client.models import LipsyncRequest
from airflow_provider_chamelaion.client.retry import RetryPolicy
from airflow_provider_chamelaion.exceptions import (
    ChamelaionAPIError,
    ChamelaionAuthError,
    ChamelaionConfigError,
    ChamelaionNotFoundError,
    ChamelaionRateLimitError,
    ChamelaionResponseError,
    ChamelaionServerError,
    ChamelaionTransportError,
    ChamelaionValidationError,
)
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook, transport_error
from airflow_provider_chamelaion.simulator.process import free_port
from airflow_provider_chamelaion.version_compat import sdk_amask_secret
from tests.harness.constants import API_KEY, MOCK_BASE_URL, connection_json
from tests.harness.loop_guard import forbid_sync_lookup_on_the_loop
from tests.harness.masking import fresh_masker
from tests.harness.retry import RecordedSleeps
from tests.harness.scripted_server import Reply, ScriptedServer, scripted_server

HAS_ASYNC_MASKING = sdk_amask_secret is not None
REQUEST_ID = "6f82a2d8-a6d4-4e8a-a0fa-e8b09823a2d8"
REQUEST_PATH = f"/v1/lipsync/requests/{REQUEST_ID}"
RAW_REQUEST_PATH = f"/api{REQUEST_PATH}"
PAYLOAD = {
    "id": REQUEST_ID,
    "status": "completed",
    "created_at": "2026-04-07T10:00:00Z",
    "output_url": "https://storage.chamelaion.test/output/6f82a2d8.mp4",
    "unknown": {"nested": True},
}
OK = Reply(200, PAYLOAD)
#: Read timeout of every hook here; a ``slow`` reply answers well after it.
READ_TIMEOUT = 0.3


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ScriptedServer]:
    """A scripted server, with ``chamelaion_default`` pointing at it."""
    async for running in scripted_server():
        monkeypatch.setenv("AIRFLOW_CONN_CHAMELAION_DEFAULT", connection_json(running.base_url))
        yield running


@pytest.fixture
def hook(server: ScriptedServer, retry_policy: RetryPolicy) -> ChamelaionHook:
    return ChamelaionHook(retry_policy=retry_policy, timeout=(2.0, READ_TIMEOUT))


class TestAgetRequest:
    async def test_exact_call(self, hook: ChamelaionHook, server: ScriptedServer) -> None:
        server.answer(OK)
        request = await hook.aget_request(REQUEST_ID)
        assert request == LipsyncRequest(
            id=REQUEST_ID,
            status="completed",
            created_at="2026-04-07T10:00:00Z",
            output_url=PAYLOAD["output_url"],  # type: ignore[arg-type]
        )
        assert len(server.seen) == 1
        sent = server.seen[0]
        assert sent.method == "GET"
        assert sent.raw_path == RAW_REQUEST_PATH
        assert sent.headers["x-api-key"] == API_KEY
        assert sent.headers["user-agent"].startswith("airflow-provider-chamelaion/")
        assert "cookie" not in sent.headers
        assert sent.body == b""

    @pytest.mark.parametrize(
        ("request_id", "segment"),
        [
            ("dub episode 42", "dub%20episode%2042"),
            ("ep?42#x", "ep%3F42%23x"),
            ("a%2Fb", "a%252Fb"),
        ],
    )
    async def test_id_is_escaped_as_one_path_segment(
        self, hook: ChamelaionHook, server: ScriptedServer, request_id: str, segment: str
    ) -> None:
        server.answer(Reply(200, {"id": request_id, "status": "queued"}))
        assert (await hook.aget_request(request_id)).id == request_id
        assert server.seen[-1].raw_path == f"/api/v1/lipsync/requests/{segment}"

    @pytest.mark.parametrize("request_id", ["a/b", "", "x\n"])
    async def test_bad_id_fails_before_any_call(
        self, hook: ChamelaionHook, server: ScriptedServer, request_id: str
    ) -> None:
        with pytest.raises(ChamelaionConfigError, match="request_id"):
            await hook.aget_request(request_id)
        assert server.seen == []


class TestAsyncRetries:
    @pytest.mark.parametrize("status", [500, 502, 503, 504])
    async def test_server_error_then_ok(
        self, hook: ChamelaionHook, server: ScriptedServer, sleeps: RecordedSleeps, status: int
    ) -> None:
        server.answer(Reply(status, {"message": "busy"}), OK)
        assert (await hook.aget_request(REQUEST_ID)).id == REQUEST_ID
        assert len(server.seen) == 2
        assert len(sleeps) == 1

    @pytest.mark.parametrize(
        ("status", "cls", "message"),
        [
            (401, ChamelaionAuthError, "Invalid API key"),
            (403, ChamelaionAuthError, "Forbidden"),
            (404, ChamelaionNotFoundError, "Request not found"),
            (422, ChamelaionValidationError, "bad id"),
        ],
    )
    async def test_client_errors_fail_at_once(
        self,
        hook: ChamelaionHook,
        server: ScriptedServer,
        sleeps: RecordedSleeps,
        status: int,
        cls: type[ChamelaionAPIError],
        message: str,
    ) -> None:
        server.answer(Reply(status, {"message": message}))
        with pytest.raises(cls) as info:
            await hook.aget_request(REQUEST_ID)
        assert type(info.value) is cls
        assert (info.value.status_code, info.value.method, info.value.path) == (status, "GET", REQUEST_PATH)
        assert info.value.message == message
        assert len(server.seen) == 1
        assert sleeps == []

    # Each real failure, then a good answer: (replies that fail one attempt, HTTP calls in all).
    # A connection dropped before any answer is re-sent once by aiohttp itself (RFC 9112 allows it
    # for an idempotent GET): it takes two drops to fail one attempt of the hook.
    @pytest.mark.parametrize(
        ("failing", "calls"),
        [
            pytest.param([Reply(fault="slow", delay=1.0, json={})], 2, id="read timeout"),
            pytest.param([Reply(fault="truncate", json=PAYLOAD)], 2, id="body cut short"),
            pytest.param([Reply(fault="drop"), Reply(fault="drop")], 3, id="dropped twice"),
        ],
    )
    async def test_transport_errors_retried(
        self,
        hook: ChamelaionHook,
        server: ScriptedServer,
        sleeps: RecordedSleeps,
        failing: list[Reply],
        calls: int,
    ) -> None:
        server.answer(*failing, OK)
        assert (await hook.aget_request(REQUEST_ID)).status == "completed"
        assert len(server.seen) == calls
        assert len(sleeps) == 1

    async def test_one_dropped_connection_is_absorbed_by_aiohttp(
        self, hook: ChamelaionHook, server: ScriptedServer, sleeps: RecordedSleeps
    ) -> None:
        server.answer(Reply(fault="drop"), OK)
        assert (await hook.aget_request(REQUEST_ID)).status == "completed"
        assert len(server.seen) == 2
        assert sleeps == []

    @pytest.mark.parametrize(
        ("retry_after", "expected"),
        [("7", 7.0), ("0.25", 0.25), ("3600", 60.0), ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0)],
    )
    async def test_retry_after_honoured(
        self,
        hook: ChamelaionHook,
        server: ScriptedServer,
        sleeps: RecordedSleeps,
        retry_after: str,
        expected: float,
    ) -> None:
        server.answer(Reply(429, headers={"Retry-After": retry_after}), OK)
        await hook.aget_request(REQUEST_ID)
        assert len(server.seen) == 2
        assert sleeps == [expected]

    async def test_retry_after_cap_follows_the_policy(
        self, server: ScriptedServer, sleeps: RecordedSleeps
    ) -> None:
        policy = RetryPolicy(sleep=sleeps, async_sleep=sleeps.async_sleep, max_retry_after=4.0)
        server.answer(Reply(429, headers={"Retry-After": "30"}), OK)
        await ChamelaionHook(retry_policy=policy).aget_request(REQUEST_ID)
        assert sleeps == [4.0]

    async def test_waits_use_the_async_sleep(self, server: ScriptedServer) -> None:
        sync_waits: list[float] = []
        async_waits: list[float] = []

        async def record(seconds: float) -> None:
            async_waits.append(seconds)

        policy = RetryPolicy(sleep=sync_waits.append, async_sleep=record, initial_backoff=1.0, jitter=0.0)
        server.answer(Reply(503), Reply(503), OK)
        await ChamelaionHook(retry_policy=policy).aget_request(REQUEST_ID)
        assert async_waits == [1.0, 2.0]
        assert sync_waits == []

    async def test_bounded_by_max_attempts(
        self, server: ScriptedServer, retry_policy: RetryPolicy, sleeps: RecordedSleeps
    ) -> None:
        server.default = Reply(503, {"message": "down"})
        with pytest.raises(ChamelaionServerError, match="down"):
            await ChamelaionHook(max_attempts=3, retry_policy=retry_policy).aget_request(REQUEST_ID)
        assert len(server.seen) == 3
        assert len(sleeps) == 2

    async def test_rate_limited_until_out_of_attempts(
        self, hook: ChamelaionHook, server: ScriptedServer, sleeps: RecordedSleeps
    ) -> None:
        server.default = Reply(429, {"message": "quota"}, headers={"Retry-After": "2"})
        with pytest.raises(ChamelaionRateLimitError):
            await hook.aget_request(REQUEST_ID)
        assert len(server.seen) == 5
        assert sleeps == [2.0] * 4

    async def test_connection_refused_after_all_attempts_was_never_sent(
        self, monkeypatch: pytest.MonkeyPatch, retry_policy: RetryPolicy, sleeps: RecordedSleeps
    ) -> None:
        url = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
        monkeypatch.setenv("AIRFLOW_CONN_CHAMELAION_DEFAULT", connection_json(url))
        with pytest.raises(ChamelaionTransportError) as info:
            await ChamelaionHook(retry_policy=retry_policy).aget_request(REQUEST_ID)
        assert len(sleeps) == 4
        assert info.value.status_code is None
        assert info.value.sent is False
        assert (info.value.method, info.value.path) == ("GET", REQUEST_PATH)
        assert "ClientConnectorError" in str(info.value)

    async def test_read_timeout_after_all_attempts_may_have_been_sent(
        self, server: ScriptedServer, retry_policy: RetryPolicy
    ) -> None:
        server.default = Reply(fault="slow", delay=1.0, json={})
        hook = ChamelaionHook(max_attempts=2, retry_policy=retry_policy, timeout=(2.0, READ_TIMEOUT))
        with pytest.raises(ChamelaionTransportError) as info:
            await hook.aget_request(REQUEST_ID)
        assert info.value.sent is True
        assert "SocketTimeoutError" in str(info.value)
        assert len(server.seen) == 2

    async def test_html_502_is_readable(self, hook: ChamelaionHook, server: ScriptedServer) -> None:
        server.default = Reply(
            502,
            text="<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
            headers={"Content-Type": "text/html"},
        )
        with pytest.raises(ChamelaionServerError) as info:
            await hook.aget_request(REQUEST_ID)
        assert "502 Bad Gateway" in str(info.value)
        assert "text/html" in str(info.value)
        assert "<" not in str(info.value)

    async def test_malformed_json(self, hook: ChamelaionHook, server: ScriptedServer) -> None:
        server.answer(Reply(200, text="{oops"))
        with pytest.raises(ChamelaionResponseError) as info:
            await hook.aget_request(REQUEST_ID)
        assert info.value.status_code == 200
        assert len(server.seen) == 1

    async def test_redirect_not_followed(self, hook: ChamelaionHook, server: ScriptedServer) -> None:
        server.answer(Reply(302, headers={"Location": "/api/elsewhere"}), OK)
        with pytest.raises(ChamelaionAPIError) as info:
            await hook.aget_request(REQUEST_ID)
        assert info.value.status_code == 302
        assert [seen.raw_path for seen in server.seen] == [RAW_REQUEST_PATH]


# -- how aiohttp's failures are classified: the ``sent`` flag decides whether even a POST may be sent
# again. Written down per exception class, not derived from the classifier.


def _connector_error(os_error: OSError) -> aiohttp.ClientConnectorError:
    key = SimpleNamespace(host="api.chamelaion.test", port=443, ssl=True)
    return aiohttp.ClientConnectorError(key, os_error)  # type: ignore[arg-type]


AIOHTTP_FAILURES: list[tuple[str, BaseException, bool]] = [
    ("connection refused", _connector_error(ConnectionRefusedError(111, "Connection refused")), False),
    (
        "DNS failure",
        aiohttp.ClientConnectorDNSError(
            SimpleNamespace(host="api.chamelaion.test", port=443, ssl=True),  # type: ignore[arg-type]
            OSError(-2, "Name or service not known"),
        ),
        False,
    ),
    ("connect timeout", aiohttp.ConnectionTimeoutError("Connection timeout to host"), False),
    ("read timeout", aiohttp.SocketTimeoutError("Timeout on reading data from socket"), True),
    ("server disconnected", aiohttp.ServerDisconnectedError(), True),
    ("connection reset", aiohttp.ClientOSError(104, "Connection reset by peer"), True),
    ("body cut short", aiohttp.ClientPayloadError("Response payload is not completed"), True),
    ("asyncio deadline", asyncio.TimeoutError(), True),
]


@pytest.mark.parametrize(
    ("error", "sent"), [pytest.param(error, sent, id=name) for name, error, sent in AIOHTTP_FAILURES]
)
def test_aiohttp_failures_are_classified_with_the_sent_flag(error: BaseException, sent: bool) -> None:
    classified = transport_error(error, "POST", "/v1/lipsync/generate")
    assert type(classified) is ChamelaionTransportError
    assert classified.sent is sent
    assert (classified.method, classified.path, classified.status_code) == (
        "POST",
        "/v1/lipsync/generate",
        None,
    )
    assert str(classified).startswith(
        f"Chamelaion API POST /v1/lipsync/generate failed (no response): {type(error).__name__}"
    )


def test_classified_message_drops_query_strings() -> None:
    error = aiohttp.ClientPayloadError("cut while reading https://cdn.test/o.mp4?sig=SECRET&exp=1")
    assert "sig=" not in str(transport_error(error, "GET", "/outputs/o.mp4"))


# -- the client: the loop's shared session -----------------------------------------------------------------


class TestClients:
    async def test_explicit_client_is_reused_and_left_open(
        self, hook: ChamelaionHook, server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        server.default = OK
        async with hook.shared_async_client() as client:

            def no_new_client() -> Any:
                raise AssertionError("a new client was opened although one was passed")

            monkeypatch.setattr(hook, "shared_async_client", no_new_client)
            await hook.aget_request(REQUEST_ID, client=client)
            await hook.aget_request(REQUEST_ID, client=client)
            assert not client._session.closed
        assert len(server.seen) == 2
        assert server.seen[0].client_port == server.seen[1].client_port  # one keep-alive connection
        assert all(seen.headers["x-api-key"] == API_KEY for seen in server.seen)
        assert client._session.closed  # closed with its last user

    async def test_standalone_call_opens_a_session_and_closes_it(
        self, hook: ChamelaionHook, server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        server.answer(Reply(503), OK)
        sessions: list[Any] = []
        original = shared_session.shared_client

        def spy(*args: Any) -> Any:
            context = original(*args)
            sessions.append(context)
            return context

        monkeypatch.setattr(shared_session, "shared_client", spy)
        await hook.aget_request(REQUEST_ID)
        assert len(sessions) == 1  # one client for all attempts of the call
        assert asyncio.get_running_loop() not in shared_session._SESSIONS
        assert server.seen[0].client_port == server.seen[1].client_port  # the retry reused the connection

    async def test_standalone_call_closes_its_session_on_error(
        self, hook: ChamelaionHook, server: ScriptedServer
    ) -> None:
        server.answer(Reply(404, {"message": "nope"}))
        with pytest.raises(ChamelaionNotFoundError):
            await hook.aget_request(REQUEST_ID)
        assert asyncio.get_running_loop() not in shared_session._SESSIONS

    async def test_standalone_call_joins_the_session_a_trigger_holds(
        self, hook: ChamelaionHook, server: ScriptedServer, retry_policy: RetryPolicy
    ) -> None:
        server.default = OK
        loop = asyncio.get_running_loop()
        async with hook.shared_async_client() as held:
            await hook.aget_request(REQUEST_ID, client=held)
            await ChamelaionHook(retry_policy=retry_policy).aget_request(REQUEST_ID)
            assert _shared_session(loop) is held._session
            assert _shared_users(loop) == 1  # the standalone call left
            assert not held._session.closed
        assert server.seen[0].client_port == server.seen[1].client_port

    async def test_client_settings(self, server: ScriptedServer) -> None:
        hook = ChamelaionHook(timeout=(3.0, 7.0))
        async with hook.shared_async_client() as client:
            assert client._timeout.sock_connect == 3.0
            assert client._timeout.sock_read == 7.0
            assert client._timeout.total is None
            headers = client._session.headers
            assert headers["User-Agent"].startswith("airflow-provider-chamelaion/")
            assert "x-api-key" not in {name.lower() for name in headers}
            assert isinstance(client._session.cookie_jar, aiohttp.DummyCookieJar)


def _shared_session(loop: asyncio.AbstractEventLoop) -> aiohttp.ClientSession:
    return shared_session._SESSIONS[loop].session


def _shared_users(loop: asyncio.AbstractEventLoop) -> int:
    return shared_session._SESSIONS[loop].users


class TestAsyncSettings:
    async def test_never_looks_the_connection_up_synchronously_on_the_loop(
        self, hook: ChamelaionHook, server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        off_loop_lookups = forbid_sync_lookup_on_the_loop(monkeypatch)
        settings = await hook.aget_settings()
        assert settings.base_url == server.base_url
        assert settings.api_key == API_KEY
        # 3.3+: Airflow's async lookup; before: the sync one, in a worker thread.
        assert len(off_loop_lookups) == (0 if HAS_ASYNC_MASKING else 1)
        assert threading.current_thread().name not in off_loop_lookups

        server.answer(OK)
        await hook.aget_request(REQUEST_ID)
        assert len(server.seen) == 1

    async def test_aget_request_on_a_fresh_hook_never_uses_the_sync_path(
        self, server: ScriptedServer, retry_policy: RetryPolicy, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        forbid_sync_lookup_on_the_loop(monkeypatch)
        server.answer(OK)
        assert (await ChamelaionHook(retry_policy=retry_policy).aget_request(REQUEST_ID)).id == REQUEST_ID

    async def test_async_and_sync_settings_agree(self, server: ScriptedServer) -> None:
        assert await ChamelaionHook().aget_settings() == ChamelaionHook().get_settings()

    async def test_settings_cached(self, hook: ChamelaionHook) -> None:
        first = await hook.aget_settings()
        assert await hook.aget_settings() is first
        assert hook.get_settings() is first

    async def test_missing_connection(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("AIRFLOW_CONN_CHAMELAION_ASYNC_MISSING", raising=False)
        with pytest.raises(ChamelaionConfigError) as info:
            await ChamelaionHook("chamelaion_async_missing").aget_settings()
        assert "'chamelaion_async_missing'" in str(info.value)
        assert "AIRFLOW_CONN_CHAMELAION_ASYNC_MISSING" in str(info.value)

    async def test_missing_key(self, monkeypatch: pytest.MonkeyPatch, server: ScriptedServer) -> None:
        monkeypatch.setenv(
            "AIRFLOW_CONN_CHAMELAION_ASYNC_NOKEY",
            connection_json(server.base_url, password=None),
        )
        with pytest.raises(ChamelaionConfigError, match="'chamelaion_async_nokey' has no API key"):
            await ChamelaionHook("chamelaion_async_nokey").aget_settings()

    async def test_masks_the_key(self, hook: ChamelaionHook, monkeypatch: pytest.MonkeyPatch) -> None:
        # A fresh masker, and a connection lookup that masks nothing itself (Airflow's own lookup masks
        # the password too): only what the hook registers can redact the key.
        fresh = fresh_masker(monkeypatch)

        def plain_lookup(conn_id: str) -> Any:
            return SimpleNamespace(host=MOCK_BASE_URL, password=API_KEY, port=None)

        async def async_plain_lookup(conn_id: str) -> Any:
            return plain_lookup(conn_id)

        # The hook uses whichever lookup the line makes safe on the loop (utils.secrets.aget_connection).
        monkeypatch.setattr(hook, "aget_connection", async_plain_lookup, raising=False)
        monkeypatch.setattr(hook, "get_connection", plain_lookup)
        assert fresh.redact(API_KEY) == API_KEY
        await hook.aget_settings()
        assert fresh.redact(f"x-api-key: {API_KEY}") == "x-api-key: ***"


class TestAsyncSecrets:
    @pytest.mark.parametrize("status", [401, 404, 429, 503])
    async def test_api_errors_never_hold_the_key(
        self, hook: ChamelaionHook, server: ScriptedServer, status: int
    ) -> None:
        server.default = Reply(status, {"message": "no"})
        with pytest.raises(ChamelaionAPIError) as info:
            await hook.aget_request(REQUEST_ID)
        _assert_no_key(info.value)

    @pytest.mark.parametrize(
        "failing",
        [
            pytest.param(Reply(fault="drop"), id="dropped"),
            pytest.param(Reply(fault="slow", delay=1.0, json={}), id="read timeout"),
            pytest.param(Reply(fault="truncate", json=PAYLOAD), id="body cut short"),
        ],
    )
    async def test_transport_errors_never_hold_the_key(
        self, server: ScriptedServer, retry_policy: RetryPolicy, failing: Reply
    ) -> None:
        server.default = failing
        hook = ChamelaionHook(max_attempts=1, retry_policy=retry_policy, timeout=(2.0, READ_TIMEOUT))
        with pytest.raises(ChamelaionTransportError) as info:
            await hook.aget_request(REQUEST_ID)
        _assert_no_key(info.value)
        assert info.value.__cause__ is None

    async def test_logs_never_hold_the_key(
        self,
        hook: ChamelaionHook,
        server: ScriptedServer,
        caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        caplog.set_level("DEBUG")
        server.answer(Reply(503), Reply(fault="drop"), Reply(fault="drop"), Reply(401, {}))
        with pytest.raises(ChamelaionAuthError):
            await hook.aget_request(REQUEST_ID)
        assert len(server.seen) == 4
        assert any("retrying" in r.getMessage() for r in caplog.records)
        assert API_KEY not in caplog.text
        captured = capsys.readouterr()
        assert API_KEY not in captured.out + captured.err


def _assert_no_key(error: BaseException) -> None:
    assert API_KEY not in str(error)
    assert API_KEY not in repr(error)
    assert API_KEY not in repr(vars(error))
    assert API_KEY.encode() not in pickle.dumps(error)
