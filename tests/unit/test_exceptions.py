"""The typed errors: which class an HTTP status gives."""

from __future__ import annotations

from airflow_provider_chamelaion.exceptions import (
    ChamelaionAPIError,
    ChamelaionAuthError,
    ChamelaionNotFoundError,
    ChamelaionRateLimitError,
    ChamelaionServerError,
    ChamelaionValidationError,
    error_for_status,
)


def test_error_for_status_classes() -> None:
    expected = {
        401: ChamelaionAuthError,
        403: ChamelaionAuthError,
        404: ChamelaionNotFoundError,
        422: ChamelaionValidationError,
        429: ChamelaionRateLimitError,
        503: ChamelaionServerError,
        418: ChamelaionAPIError,
    }
    for status, cls in expected.items():
        assert type(error_for_status(status, "m", method="GET", path="/p")) is cls
