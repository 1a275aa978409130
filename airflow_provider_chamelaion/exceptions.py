"""Errors raised by the Chamelaion provider.

Every error a user can see is a :class:`ChamelaionError`, itself an ``AirflowException`` so Airflow
treats it like any other task failure. Errors that come from the API carry the HTTP status code,
method, path and the API's own message; none of them ever carries the API key (the hook never puts
it in a URL, and request headers are not part of any message).
"""

from __future__ import annotations

from typing import Any

from airflow_provider_chamelaion.version_compat import AirflowException


class ChamelaionError(AirflowException):
    """Base class of every error this provider raises."""


class ChamelaionConfigError(ChamelaionError, ValueError):
    """The connection or an argument is wrong; raised before any HTTP call is made."""


class ChamelaionAPIError(ChamelaionError):
    """An API call failed.

    :param message: the API's own message when it gave one, else a description of the failure.
    :param status_code: HTTP status code, or ``None`` when no response was received.
    :param method: HTTP method of the failed call.
    :param path: path of the failed call, relative to the base URL (no query string, no host).
    :param retry_after: seconds the server asked the client to wait, when it said so.

    ``hint`` is what to do about it, when the provider knows (added by the hook: which connection to fix
    and where); it follows the message in ``str(error)``.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        method: str = "",
        path: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.message = message
        # AirflowException declares a class-level HTTPStatus ``status_code`` for its API server; here it is
        # the Chamelaion API's answer (None when there was none).
        self.status_code = status_code  # type: ignore[assignment]
        self.method = method
        self.path = path
        self.retry_after = retry_after
        self.hint = ""
        super().__init__(self._describe())

    def add_hint(self, hint: str) -> None:
        """Say what to do about this error after its message (the hook adds which connection to fix)."""
        self.hint = f"{self.hint} {hint}".strip()
        self.args = (self._describe(),)

    def _describe(self) -> str:
        where = f"{self.method} {self.path}".strip()
        code = f"HTTP {self.status_code}" if self.status_code is not None else "no response"
        prefix = f"Chamelaion API {where} failed ({code})" if where else f"Chamelaion API failed ({code})"
        hint = f"{'' if self.message.endswith('.') else '.'} {self.hint}" if self.hint else ""
        return f"{prefix}: {self.message}{hint}"

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Keyword-only constructor arguments: keep the error picklable (Airflow ships exceptions
        # between processes).
        return (
            _rebuild_api_error,
            (type(self), self.message, self.status_code, self.method, self.path, self.retry_after),
            {"hint": self.hint},
        )

    def __setstate__(self, state: dict[str, Any] | None) -> None:
        if state and state.get("hint"):
            self.add_hint(state["hint"])


def _rebuild_api_error(
    cls: type[ChamelaionAPIError],
    message: str,
    status_code: int | None,
    method: str,
    path: str,
    retry_after: float | None,
) -> ChamelaionAPIError:
    return cls(message, status_code=status_code, method=method, path=path, retry_after=retry_after)


class ChamelaionAuthError(ChamelaionAPIError):
    """401 or 403: the API key is missing, wrong or not allowed to do this."""


class ChamelaionNotFoundError(ChamelaionAPIError):
    """404: no request with that id or ``reference_id``."""


class ChamelaionValidationError(ChamelaionAPIError):
    """400, 409, 413, 415 or 422: the API rejected the input."""


class ChamelaionRateLimitError(ChamelaionAPIError):
    """429: too many requests; ``retry_after`` holds the server's hint when it gave one."""


class ChamelaionServerError(ChamelaionAPIError):
    """5xx: the API failed on its side."""


class ChamelaionTransportError(ChamelaionAPIError):
    """No usable response: connection refused or reset, timeout, truncated body.

    :param sent: ``False`` when the request certainly never reached the server (the connection was
        never established), so even a POST may be sent again. ``True`` when it may have.
    """

    def __init__(self, message: str, *, method: str = "", path: str = "", sent: bool = True) -> None:
        self.sent = sent
        super().__init__(message, method=method, path=path)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (
            _rebuild_transport_error,
            (self.message, self.method, self.path, self.sent),
            {"hint": self.hint},
        )


def _rebuild_transport_error(message: str, method: str, path: str, sent: bool) -> ChamelaionTransportError:
    return ChamelaionTransportError(message, method=method, path=path, sent=sent)


class ChamelaionTLSError(ChamelaionTransportError):
    """The TLS handshake failed in a way that asking again cannot fix: the server answered in plain HTTP
    (``WRONG_VERSION_NUMBER``: an http server behind an https Base URL), or its certificate is not
    trusted. Never retried; nothing was sent."""

    def __init__(self, message: str, *, method: str = "", path: str = "") -> None:
        super().__init__(message, method=method, path=path, sent=False)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_rebuild_tls_error, (self.message, self.method, self.path), {"hint": self.hint})


def _rebuild_tls_error(message: str, method: str, path: str) -> ChamelaionTLSError:
    return ChamelaionTLSError(message, method=method, path=path)


class ChamelaionResponseError(ChamelaionAPIError):
    """The API answered 2xx with a body this client cannot read (not JSON, or the wrong shape)."""


class LipsyncJobFailedError(ChamelaionError):
    """A lip-sync job ended in a failed state. The message holds the request id and the API's message."""

    def __init__(self, request_id: str, error_message: str | None, status: str = "failed") -> None:
        self.request_id = request_id
        self.error_message = error_message
        self.status = status
        detail = error_message or "the API gave no error message"
        super().__init__(f"Chamelaion lip-sync request {request_id} {status}: {detail}")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.request_id, self.error_message, self.status))


class LipsyncWaitTimeout(ChamelaionError):
    """A lip-sync request did not finish within the task's wait limit."""


class LipsyncBatchFailedError(ChamelaionError):
    """More jobs of a batch failed than its ``max_failure_rate`` accepts."""


class LipsyncBatchStopped(ChamelaionError):
    """A batch was told to stop (``on_kill``, a timeout) while submitting: what was not sent was not sent."""


def is_permanent(error: BaseException) -> bool:
    """Whether asking again cannot help: a wrong key, an unknown id, rejected input, a bad connection
    (malformed, or https to a plain-HTTP server)."""
    return isinstance(
        error,
        (
            ChamelaionAuthError,
            ChamelaionNotFoundError,
            ChamelaionValidationError,
            ChamelaionConfigError,
            ChamelaionTLSError,
        ),
    )


def error_for_status(
    status_code: int,
    message: str,
    *,
    method: str,
    path: str,
    retry_after: float | None = None,
) -> ChamelaionAPIError:
    """Build the typed error for an HTTP error status (the one place status codes map to classes)."""
    cls: type[ChamelaionAPIError]
    if status_code in (401, 403):
        cls = ChamelaionAuthError
    elif status_code == 404:
        cls = ChamelaionNotFoundError
    elif status_code in (400, 409, 413, 415, 422):
        cls = ChamelaionValidationError
    elif status_code == 429:
        cls = ChamelaionRateLimitError
    elif status_code >= 500:
        cls = ChamelaionServerError
    else:
        cls = ChamelaionAPIError
    return cls(message, status_code=status_code, method=method, path=path, retry_after=retry_after)


__all__ = [
    "ChamelaionAPIError",
    "ChamelaionAuthError",
    "ChamelaionConfigError",
    "ChamelaionError",
    "ChamelaionNotFoundError",
    "ChamelaionRateLimitError",
    "ChamelaionResponseError",
    "ChamelaionServerError",
    "ChamelaionTLSError",
    "ChamelaionTransportError",
    "ChamelaionValidationError",
    "LipsyncBatchFailedError",
    "LipsyncBatchStopped",
    "LipsyncJobFailedError",
    "LipsyncWaitTimeout",
    "is_permanent",
]
