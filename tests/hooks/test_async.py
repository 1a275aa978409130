"""The async (httpx) path of ChamelaionHook, against respx: same wire format and retry decisions as sync."""

from __future__ import annotations

import json
import pickle
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import respx

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
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
from airflow_provider_chamelaion.models import LipsyncRequest
from airflow_provider_chamelaion.retry import RetryPolicy
from airflow_provider_chamelaion.version_compat import BaseHook
from tests.conftest import API_KEY, MOCK_BASE_URL

REQUEST_ID = "6f82a2d8-a6d4-4e8a-a0fa-e8b09823a2d8"
REQUEST_URL = f"{MOCK_BASE_URL}/v1/lipsync/requests/{REQUEST_ID}"
REQUEST_PATH = f"/v1/lipsync/requests/{REQUEST_ID}"
PAYLOAD = {
    "id": REQUEST_ID,
    "status": "completed",
    "created_at": "2026-04-07T10:00:00Z",
    "output_url": "https://storage.chamelaion.test/output/6f82a2d8.mp4",
    "unknown": {"nested": True},
}


@pytest.fixture
def hook(mock_hook: ChamelaionHook) -> ChamelaionHook:
    return mock_hook


def _ok() -> httpx.Response:
    return httpx.Response(200, json=PAYLOAD)


class TestAgetRequest:
    async def test_exact_call(self, hook: ChamelaionHook, respx_mock: respx.MockRouter) -> None:
        route = respx_mock.get(REQUEST_URL).mock(return_value=_ok())
        request = await hook.aget_request(REQUEST_ID)
        assert request == LipsyncRequest(
            id=REQUEST_ID,
            status="completed",
            created_at="2026-04-07T10:00:00Z",
            output_url=PAYLOAD["output_url"],  # type: ignore[arg-type]
        )
        assert route.call_count == 1
        sent = route.calls.last.request
        assert sent.method == "GET"
        assert str(sent.url) == REQUEST_URL
        assert sent.headers["x-api-key"] == API_KEY
        assert sent.headers["User-Agent"].startswith("airflow-provider-chamelaion/")
        assert sent.content == b""

    @pytest.mark.parametrize(
        ("request_id", "segment"),
        [
            ("dub episode 42", "dub%20episode%2042"),
            ("ep?42#x", "ep%3F42%23x"),
            ("a%2Fb", "a%252Fb"),
        ],
    )
    async def test_id_is_escaped_as_one_path_segment(
        self, hook: ChamelaionHook, respx_mock: respx.MockRouter, request_id: str, segment: str
    ) -> None:
        route = respx_mock.get(url__regex=r".*").mock(
            return_value=httpx.Response(200, json={"id": request_id, "status": "queued"})
        )
        assert (await hook.aget_request(request_id)).id == request_id
        sent = route.calls.last.request
        assert sent.url.raw_path == f"/api/v1/lipsync/requests/{segment}".encode()
        assert sent.url.host == "api.chamelaion.test"

    @pytest.mark.parametrize("request_id", ["a/b", "", "x\n"])
    async def test_bad_id_fails_before_any_call(
        self, hook: ChamelaionHook, respx_mock: respx.MockRouter, request_id: str
    ) -> None:
        route = respx_mock.get(url__regex=r".*").mock(return_value=_ok())
        with pytest.raises(ChamelaionConfigError, match="request_id"):
            await hook.aget_request(request_id)
        assert route.call_count == 0


class TestAsyncRetries:
    @pytest.mark.parametrize("status", [500, 502, 503, 504])
    async def test_server_error_then_ok(
        self, hook: ChamelaionHook, respx_mock: respx.MockRouter, sleeps: Any, status: int
    ) -> None:
        route = respx_mock.get(REQUEST_URL).mock(
            side_effect=[httpx.Response(status, json={"message": "busy"}), _ok()]
        )
        assert (await hook.aget_request(REQUEST_ID)).id == REQUEST_ID
        assert route.call_count == 2
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
        respx_mock: respx.MockRouter,
        sleeps: Any,
        status: int,
        cls: type[ChamelaionAPIError],
        message: str,
    ) -> None:
        route = respx_mock.get(REQUEST_URL).mock(
            return_value=httpx.Response(status, json={"message": message})
        )
        with pytest.raises(cls) as info:
            await hook.aget_request(REQUEST_ID)
        assert type(info.value) is cls
        assert (info.value.status_code, info.value.method, info.value.path) == (status, "GET", REQUEST_PATH)
        assert info.value.message == message
        assert route.call_count == 1
        assert sleeps == []

    @pytest.mark.parametrize(
        "error",
        [
            httpx.ConnectError("connection refused"),
            httpx.ConnectTimeout("connect timed out"),
            httpx.ReadTimeout("read timed out"),
            httpx.RemoteProtocolError("server disconnected without sending a response"),
            httpx.ReadError("connection reset by peer"),
        ],
    )
    async def test_transport_errors_retried(
        self, hook: ChamelaionHook, respx_mock: respx.MockRouter, sleeps: Any, error: Exception
    ) -> None:
        route = respx_mock.get(REQUEST_URL).mock(side_effect=[error, _ok()])
        assert (await hook.aget_request(REQUEST_ID)).status == "completed"
        assert route.call_count == 2
        assert len(sleeps) == 1

    @pytest.mark.parametrize(
        ("retry_after", "expected"),
        [("7", 7.0), ("0.25", 0.25), ("3600", 60.0), ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0)],
    )
    async def test_retry_after_honoured(
        self,
        hook: ChamelaionHook,
        respx_mock: respx.MockRouter,
        sleeps: Any,
        retry_after: str,
        expected: float,
    ) -> None:
        route = respx_mock.get(REQUEST_URL).mock(
            side_effect=[httpx.Response(429, headers={"Retry-After": retry_after}), _ok()]
        )
        await hook.aget_request(REQUEST_ID)
        assert route.call_count == 2
        assert sleeps == [expected]

    async def test_retry_after_cap_follows_the_policy(
        self, mock_conn: str, respx_mock: respx.MockRouter, sleeps: Any
    ) -> None:
        policy = RetryPolicy(sleep=sleeps, async_sleep=sleeps.async_sleep, max_retry_after=4.0)
        respx_mock.get(REQUEST_URL).mock(
            side_effect=[httpx.Response(429, headers={"Retry-After": "30"}), _ok()]
        )
        await ChamelaionHook(retry_policy=policy).aget_request(REQUEST_ID)
        assert sleeps == [4.0]

    async def test_waits_use_the_async_sleep(self, mock_conn: str, respx_mock: respx.MockRouter) -> None:
        sync_waits: list[float] = []
        async_waits: list[float] = []

        async def record(seconds: float) -> None:
            async_waits.append(seconds)

        policy = RetryPolicy(sleep=sync_waits.append, async_sleep=record, initial_backoff=1.0, jitter=0.0)
        respx_mock.get(REQUEST_URL).mock(side_effect=[httpx.Response(503), httpx.Response(503), _ok()])
        await ChamelaionHook(retry_policy=policy).aget_request(REQUEST_ID)
        assert async_waits == [1.0, 2.0]
        assert sync_waits == []

    async def test_bounded_by_max_attempts(
        self, mock_conn: str, retry_policy: RetryPolicy, respx_mock: respx.MockRouter, sleeps: Any
    ) -> None:
        route = respx_mock.get(REQUEST_URL).mock(return_value=httpx.Response(503, json={"message": "down"}))
        with pytest.raises(ChamelaionServerError, match="down"):
            await ChamelaionHook(max_attempts=3, retry_policy=retry_policy).aget_request(REQUEST_ID)
        assert route.call_count == 3
        assert len(sleeps) == 2

    async def test_rate_limited_until_out_of_attempts(
        self, hook: ChamelaionHook, respx_mock: respx.MockRouter, sleeps: Any
    ) -> None:
        route = respx_mock.get(REQUEST_URL).mock(
            return_value=httpx.Response(429, headers={"Retry-After": "2"}, json={"message": "quota"})
        )
        with pytest.raises(ChamelaionRateLimitError):
            await hook.aget_request(REQUEST_ID)
        assert route.call_count == 5
        assert sleeps == [2.0] * 4

    async def test_transport_error_after_all_attempts(
        self, hook: ChamelaionHook, respx_mock: respx.MockRouter
    ) -> None:
        route = respx_mock.get(REQUEST_URL).mock(side_effect=httpx.ConnectError("refused"))
        with pytest.raises(ChamelaionTransportError) as info:
            await hook.aget_request(REQUEST_ID)
        assert route.call_count == 5
        assert info.value.status_code is None
        assert info.value.sent is False
        assert (info.value.method, info.value.path) == ("GET", REQUEST_PATH)

    async def test_html_502_is_readable(self, hook: ChamelaionHook, respx_mock: respx.MockRouter) -> None:
        respx_mock.get(REQUEST_URL).mock(
            return_value=httpx.Response(
                502,
                text="<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
                headers={"Content-Type": "text/html"},
            )
        )
        with pytest.raises(ChamelaionServerError) as info:
            await hook.aget_request(REQUEST_ID)
        assert "502 Bad Gateway" in str(info.value)
        assert "<" not in str(info.value)

    async def test_malformed_json(self, hook: ChamelaionHook, respx_mock: respx.MockRouter) -> None:
        route = respx_mock.get(REQUEST_URL).mock(return_value=httpx.Response(200, text="{oops"))
        with pytest.raises(ChamelaionResponseError) as info:
            await hook.aget_request(REQUEST_ID)
        assert info.value.status_code == 200
        assert route.call_count == 1

    async def test_redirect_not_followed(self, hook: ChamelaionHook, respx_mock: respx.MockRouter) -> None:
        route = respx_mock.get(REQUEST_URL).mock(
            return_value=httpx.Response(302, headers={"Location": "https://elsewhere.example/"})
        )
        other = respx_mock.get("https://elsewhere.example/").mock(return_value=_ok())
        with pytest.raises(ChamelaionAPIError) as info:
            await hook.aget_request(REQUEST_ID)
        assert info.value.status_code == 302
        assert route.call_count == 1
        assert other.call_count == 0


class TestClients:
    async def test_explicit_client_is_reused_and_left_open(
        self, hook: ChamelaionHook, respx_mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        route = respx_mock.get(REQUEST_URL).mock(return_value=_ok())

        def no_new_client() -> httpx.AsyncClient:
            raise AssertionError("a new client was created although one was passed")

        monkeypatch.setattr(hook, "async_client", no_new_client)
        async with httpx.AsyncClient(headers={"X-Probe": "caller-client"}) as client:
            await hook.aget_request(REQUEST_ID, client=client)
            await hook.aget_request(REQUEST_ID, client=client)
            assert not client.is_closed
        assert route.call_count == 2
        assert all(call.request.headers["X-Probe"] == "caller-client" for call in route.calls)
        assert all(call.request.headers["x-api-key"] == API_KEY for call in route.calls)

    async def test_own_client_is_closed_after_the_call(
        self, hook: ChamelaionHook, respx_mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        respx_mock.get(REQUEST_URL).mock(side_effect=[httpx.Response(503), _ok()])
        created: list[httpx.AsyncClient] = []
        original = hook.async_client

        def spy() -> httpx.AsyncClient:
            client = original()
            created.append(client)
            return client

        monkeypatch.setattr(hook, "async_client", spy)
        await hook.aget_request(REQUEST_ID)
        assert len(created) == 1  # one client for all attempts of the call
        assert created[0].is_closed

    async def test_own_client_closed_on_error(
        self, hook: ChamelaionHook, respx_mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        respx_mock.get(REQUEST_URL).mock(return_value=httpx.Response(404, json={"message": "nope"}))
        created: list[httpx.AsyncClient] = []
        original = hook.async_client

        def spy() -> httpx.AsyncClient:
            created.append(original())
            return created[-1]

        monkeypatch.setattr(hook, "async_client", spy)
        with pytest.raises(ChamelaionNotFoundError):
            await hook.aget_request(REQUEST_ID)
        assert created[0].is_closed

    async def test_async_client_settings(self) -> None:
        hook = ChamelaionHook(timeout=(3.0, 7.0))
        async with hook.async_client() as client:
            assert client.timeout.connect == 3.0
            assert client.timeout.read == 7.0
            assert client.follow_redirects is False
            assert client.headers["User-Agent"].startswith("airflow-provider-chamelaion/")
            assert "x-api-key" not in client.headers


class TestAsyncSettings:
    async def test_uses_the_async_connection_path(
        self, hook: ChamelaionHook, respx_mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def sync_lookup(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("sync get_connection called on the event loop")

        monkeypatch.setattr(BaseHook, "get_connection", classmethod(sync_lookup))
        monkeypatch.setattr(ChamelaionHook, "get_connection", classmethod(sync_lookup))
        settings = await hook.aget_settings()
        assert settings.base_url == MOCK_BASE_URL
        assert settings.api_key == API_KEY

        route = respx_mock.get(REQUEST_URL).mock(return_value=_ok())
        await hook.aget_request(REQUEST_ID)
        assert route.call_count == 1

    async def test_aget_request_on_a_fresh_hook_never_uses_the_sync_path(
        self,
        mock_conn: str,
        retry_policy: RetryPolicy,
        respx_mock: respx.MockRouter,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        def sync_lookup(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("sync get_connection called on the event loop")

        monkeypatch.setattr(BaseHook, "get_connection", classmethod(sync_lookup))
        monkeypatch.setattr(ChamelaionHook, "get_connection", classmethod(sync_lookup))
        respx_mock.get(REQUEST_URL).mock(return_value=_ok())
        assert (await ChamelaionHook(retry_policy=retry_policy).aget_request(REQUEST_ID)).id == REQUEST_ID

    async def test_async_and_sync_settings_agree(self, mock_conn: str) -> None:
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

    async def test_missing_key(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(
            "AIRFLOW_CONN_CHAMELAION_ASYNC_NOKEY",
            json.dumps({"conn_type": "chamelaion", "host": MOCK_BASE_URL}),
        )
        with pytest.raises(ChamelaionConfigError, match="'chamelaion_async_nokey' has no API key"):
            await ChamelaionHook("chamelaion_async_nokey").aget_settings()

    async def test_masks_the_key(self, hook: ChamelaionHook, monkeypatch: pytest.MonkeyPatch) -> None:
        import airflow.sdk.log as sdk_log
        from airflow.sdk._shared.secrets_masker import SecretsMasker

        # A fresh masker, and a connection lookup that masks nothing itself (Airflow's own lookup masks
        # the password too): only what the hook registers can redact the key.
        fresh = SecretsMasker()
        monkeypatch.setattr(sdk_log, "_secrets_masker", lambda: fresh)

        async def plain_lookup(conn_id: str) -> Any:
            return SimpleNamespace(host=MOCK_BASE_URL, password=API_KEY, port=None)

        monkeypatch.setattr(hook, "aget_connection", plain_lookup)
        assert fresh.redact(API_KEY) == API_KEY
        await hook.aget_settings()
        assert fresh.redact(f"x-api-key: {API_KEY}") == "x-api-key: ***"


class TestAsyncSecrets:
    @pytest.mark.parametrize("status", [401, 404, 429, 503])
    async def test_api_errors_never_hold_the_key(
        self, hook: ChamelaionHook, respx_mock: respx.MockRouter, status: int
    ) -> None:
        respx_mock.get(REQUEST_URL).mock(return_value=httpx.Response(status, json={"message": "no"}))
        with pytest.raises(ChamelaionAPIError) as info:
            await hook.aget_request(REQUEST_ID)
        _assert_no_key(info.value)

    @pytest.mark.parametrize(
        "error",
        [
            httpx.ConnectError("[Errno 111] Connection refused"),
            httpx.ReadTimeout("timed out"),
            httpx.RemoteProtocolError("peer closed connection"),
        ],
    )
    async def test_transport_errors_never_hold_the_key(
        self, hook: ChamelaionHook, respx_mock: respx.MockRouter, error: Exception
    ) -> None:
        respx_mock.get(REQUEST_URL).mock(side_effect=error)
        with pytest.raises(ChamelaionTransportError) as info:
            await hook.aget_request(REQUEST_ID)
        _assert_no_key(info.value)
        assert info.value.__cause__ is None

    async def test_logs_never_hold_the_key(
        self,
        hook: ChamelaionHook,
        respx_mock: respx.MockRouter,
        caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        caplog.set_level("DEBUG")
        respx_mock.get(REQUEST_URL).mock(
            side_effect=[httpx.Response(503), httpx.ConnectError("refused"), httpx.Response(401, json={})]
        )
        with pytest.raises(ChamelaionAuthError):
            await hook.aget_request(REQUEST_ID)
        assert any("retrying" in r.getMessage() for r in caplog.records)
        assert API_KEY not in caplog.text
        captured = capsys.readouterr()
        assert API_KEY not in captured.out + captured.err


def _assert_no_key(error: BaseException) -> None:
    assert API_KEY not in str(error)
    assert API_KEY not in repr(error)
    assert API_KEY not in repr(vars(error))
    assert API_KEY.encode() not in pickle.dumps(error)
