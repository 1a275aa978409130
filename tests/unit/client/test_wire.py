"""The sans-IO wire protocol: the Retry-After header, as delta-seconds or an HTTP date."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_chamelaion.client.wire import parse_retry_after

NOW = datetime(2026, 4, 7, 10, 0, 0, tzinfo=timezone.utc)


class TestParseRetryAfter:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("0", 0.0),
            ("7", 7.0),
            ("120", 120.0),
            ("1.5", 1.5),
            ("  3 ", 3.0),
            ("-5", 0.0),
        ],
    )
    def test_delta_seconds(self, value: str, expected: float) -> None:
        assert parse_retry_after(value) == expected

    def test_http_date_in_the_future(self) -> None:
        assert parse_retry_after("Tue, 07 Apr 2026 10:00:30 GMT", now=NOW) == 30.0

    def test_http_date_without_zone_is_utc(self) -> None:
        assert parse_retry_after("Tue, 07 Apr 2026 10:01:00 -0000", now=NOW) == 60.0

    def test_http_date_with_offset(self) -> None:
        # 12:00:10 at +02:00 is 10:00:10 UTC.
        assert parse_retry_after("Tue, 07 Apr 2026 12:00:10 +0200", now=NOW) == 10.0

    def test_http_date_in_the_past_is_zero(self) -> None:
        assert parse_retry_after("Tue, 07 Apr 2026 09:59:00 GMT", now=NOW) == 0.0

    def test_http_date_uses_the_current_time_by_default(self) -> None:
        assert parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT") == 0.0
        far = datetime.now(timezone.utc) + timedelta(days=3650)
        value = far.strftime("%a, %d %b %Y %H:%M:%S GMT")
        seconds = parse_retry_after(value)
        assert seconds is not None
        assert seconds > 3600 * 24 * 365

    @pytest.mark.parametrize("value", [None, "", "   ", "soon", "in a minute", "Tue, 99 Foo", "nan", "1,5"])
    def test_absent_or_garbage_is_none(self, value: str | None) -> None:
        assert parse_retry_after(value) is None
