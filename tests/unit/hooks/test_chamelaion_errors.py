"""Typed errors with the API's own message; nothing ever holds the API key."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from requests_mock import Mocker

from airflow_provider_chamelaion.client.retry import RetryPolicy
from airflow_provider_chamelaion.client.settings import ApiSettings
from airflow_provider_chamelaion.exceptions import (
    ChamelaionAPIError,
    ChamelaionAuthError,
    ChamelaionConfigError,
    ChamelaionNotFoundError,
    ChamelaionResponseError,
    ChamelaionServerError,
    ChamelaionTLSError,
    ChamelaionTransportError,
    ChamelaionValidationError,
)
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
from airflow_provider_chamelaion.simulator import Simulator
from tests.harness.constants import API_KEY, MOCK_BASE_URL, connection_json
from tests.harness.masking import fresh_masker, redact
from tests.harness.mock_api import (
    AUDIO_URL,
    GENERATE_URL,
    REQUEST_ID,
    REQUEST_URL,
    REQUESTS_URL,
    VIDEO_URL,
    _completed,
    _last,
    _no_chained_traceback,
    _refused,
    _request_json,
)

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
        if status == 404:  # a 404 on an endpoint that always exists also says why it probably happened
            message += f" (called {MOCK_BASE_URL}/v1/lipsync/generate, which does not exist: the connection's"
            assert info.value.message.startswith(message)
        else:
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
            connection_json("ftp://x.test"),
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
        # A fresh masker, and a connection lookup that masks nothing itself (Airflow's own lookup may
        # mask the password too): only what the hook registers can redact the key.
        fresh = fresh_masker(monkeypatch)
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


class TestBaseUrlWithoutPrefix:
    """A Base URL without '/api': every endpoint is a 404 that must say so, not just 'Not Found'."""

    @pytest.fixture
    def hook_without_prefix(
        self, simulator: Simulator, monkeypatch: pytest.MonkeyPatch, retry_policy: RetryPolicy
    ) -> ChamelaionHook:
        monkeypatch.setenv("AIRFLOW_CONN_CHAMELAION_DEFAULT", connection_json(simulator.origin))
        return ChamelaionHook(retry_policy=retry_policy)

    def test_submit_names_the_url_and_the_missing_prefix(
        self, hook_without_prefix: ChamelaionHook, simulator: Simulator
    ) -> None:
        with pytest.raises(ChamelaionNotFoundError) as info:
            hook_without_prefix.generate("https://media.test/v.mp4", "https://media.test/a.wav")
        message = str(info.value)
        assert f"called {simulator.origin}/v1/lipsync/generate, which does not exist" in message
        assert "probably lacks its path prefix, e.g. '/api'" in message
        assert simulator.state.jobs == {}

    def test_test_connection_says_the_same(
        self, hook_without_prefix: ChamelaionHook, simulator: Simulator
    ) -> None:
        ok, message = hook_without_prefix.test_connection()
        assert not ok
        assert f"called {simulator.origin}/v1/lipsync/requests, which does not exist" in message
        assert "lacks its path prefix" in message

    def test_unknown_request_id_is_a_plain_not_found(self, sim_hook: ChamelaionHook) -> None:
        with pytest.raises(ChamelaionNotFoundError) as info:
            sim_hook.get_request("ep99-unknown")
        assert "path prefix" not in str(info.value)

    async def test_async_path_gives_the_hint_on_a_collection(
        self, simulator: Simulator, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_CHAMELAION_DEFAULT", connection_json(simulator.origin))
        with pytest.raises(ChamelaionNotFoundError, match="lacks its path prefix"):
            await ChamelaionHook()._acall("GET", "/v1/lipsync/requests")


class TestErrorsSayWhatToFix:
    """A refused key names the connection and where its key is set; https to a plain-HTTP server says
    ``scheme=http`` and is not retried (it fails the same way every time)."""

    @pytest.mark.parametrize("status", [401, 403])
    @pytest.mark.parametrize("call", ["get", "post", "test_connection"])
    def test_a_refused_key_names_the_connection_and_where_its_key_is_set(
        self, hook: ChamelaionHook, requests_mock: Mocker, status: int, call: str
    ) -> None:
        requests_mock.get(REQUEST_URL, status_code=status, json={"message": "Invalid or missing API key"})
        requests_mock.get(REQUESTS_URL, status_code=status, json={"message": "Invalid or missing API key"})
        requests_mock.post(GENERATE_URL, status_code=status, json={"message": "Invalid or missing API key"})
        if call == "test_connection":
            ok, message = hook.test_connection()
            assert not ok
        else:
            with pytest.raises(ChamelaionAuthError) as info:
                hook.get_request(REQUEST_ID) if call == "get" else hook.generate(VIDEO_URL, AUDIO_URL)
            message = str(info.value)
            assert info.value.status_code == status
        assert f"(HTTP {status}): Invalid or missing API key. " in message
        assert "API key of Airflow connection 'chamelaion_default'" in message
        assert "password (the 'API key' field of its form in the UI)" in message
        assert "AIRFLOW_CONN_CHAMELAION_DEFAULT" in message
        assert requests_mock.call_count == 1

    async def test_the_async_path_names_the_connection_too(
        self, simulator: Simulator, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_MY_CHAMELAION", connection_json(simulator.base_url, "wrong-key-123"))
        with pytest.raises(ChamelaionAuthError) as info:
            await ChamelaionHook("my_chamelaion").aget_request("r-1")
        assert "API key of Airflow connection 'my_chamelaion'" in str(info.value)
        assert "AIRFLOW_CONN_MY_CHAMELAION" in str(info.value)
        assert "wrong-key-123" not in str(info.value)

    @pytest.fixture
    def https_to_plain_http(self, simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> Simulator:
        """A URI-form connection to the (plain-HTTP) simulator without ``scheme=http``: https is assumed."""
        host, port = simulator.origin.removeprefix("http://").split(":")
        monkeypatch.setenv("AIRFLOW_CONN_CHAMELAION_DEFAULT", f"chamelaion://:{API_KEY}@{host}:{port}/api")
        return simulator

    @staticmethod
    def _assert_says_scheme_http(error: ChamelaionAPIError) -> None:
        message = str(error)
        assert "WRONG_VERSION_NUMBER" in message
        assert "The server answered in plain HTTP, not TLS" in message
        assert "extra scheme=http" in message
        assert "Fix Airflow connection 'chamelaion_default'" in message
        assert API_KEY not in message

    @pytest.mark.parametrize("call", ["get", "post"])
    def test_https_to_a_plain_http_server_suggests_scheme_http_and_is_not_retried(
        self, https_to_plain_http: Simulator, sleeps: Any, retry_policy: RetryPolicy, call: str
    ) -> None:
        hook = ChamelaionHook(retry_policy=retry_policy)
        with pytest.raises(ChamelaionTLSError) as info:
            hook.get_request("r-1") if call == "get" else hook.generate(VIDEO_URL, AUDIO_URL)
        self._assert_says_scheme_http(info.value)
        assert info.value.sent is False
        assert sleeps == []  # one attempt: no backoff before a retry
        assert https_to_plain_http.state.jobs == {}

    async def test_the_async_path_suggests_scheme_http_and_does_not_retry(
        self, https_to_plain_http: Simulator, sleeps: Any, retry_policy: RetryPolicy
    ) -> None:
        with pytest.raises(ChamelaionTLSError) as info:
            await ChamelaionHook(retry_policy=retry_policy).aget_request("r-1")
        self._assert_says_scheme_http(info.value)
        assert sleeps == []

    def test_an_untrusted_certificate_is_not_retried_and_says_so(
        self, hook: ChamelaionHook, requests_mock: Mocker, sleeps: Any
    ) -> None:
        requests_mock.get(
            REQUEST_URL,
            exc=requests.exceptions.SSLError(
                "HTTPSConnectionPool(host='api.chamelaion.test', port=443): Max retries exceeded (Caused by "
                "SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
                "failed: self-signed certificate (_ssl.c:1006)')))"
            ),
        )
        with pytest.raises(ChamelaionTLSError, match="certificate is not trusted here") as info:
            hook.get_request(REQUEST_ID)
        assert "Fix Airflow connection 'chamelaion_default'" in str(info.value)
        assert requests_mock.call_count == 1
        assert sleeps == []

    def test_a_handshake_cut_short_is_still_retried(
        self, hook: ChamelaionHook, requests_mock: Mocker, sleeps: Any
    ) -> None:
        requests_mock.get(
            REQUEST_URL,
            [
                {"exc": requests.exceptions.SSLError("EOF occurred in violation of protocol (_ssl.c:2427)")},
                {"json": _request_json()},
            ],
        )
        assert hook.get_request(REQUEST_ID).id == REQUEST_ID
        assert len(sleeps) == 1

    def test_tls_errors_survive_pickling(self) -> None:
        error = ChamelaionTLSError("SSLError: wrong version", method="GET", path="/v1/lipsync/requests")
        error.add_hint("Fix Airflow connection 'c'")
        clone = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
        assert type(clone) is ChamelaionTLSError
        assert (str(clone), clone.sent) == (str(error), False)
