"""The hook's sync retries: GETs on transient errors, POSTs only when the server did not act."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests
from requests_mock import Mocker

from airflow_provider_chamelaion.client.retry import RetryPolicy
from airflow_provider_chamelaion.client.wire import parse_retry_after
from airflow_provider_chamelaion.exceptions import (
    ChamelaionRateLimitError,
    ChamelaionServerError,
    ChamelaionTransportError,
)
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
from tests.harness.mock_api import (
    ACCEPTED,
    AUDIO_URL,
    GENERATE_URL,
    REQUEST_ID,
    REQUEST_URL,
    REQUESTS_URL,
    VIDEO_URL,
    _page,
    _refused,
    _request_json,
)

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
