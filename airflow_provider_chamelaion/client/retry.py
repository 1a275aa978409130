"""The one retry policy shared by the hook's sync (requests) and async (aiohttp) paths.

Both paths first turn whatever went wrong into a typed :class:`~.exceptions.ChamelaionAPIError` (HTTP
statuses in :mod:`~airflow_provider_chamelaion.client.wire`, transport failures of either library in the hook's ``transport_error``), then
hand it to the same :class:`RetryPolicy` (``call`` for sync code, ``acall`` for async code), so "what is
retried and how long to wait" is decided here and only here:

* idempotent calls (GETs) are retried on transport errors (connection refused or reset, timeouts,
  truncated bodies; not a TLS handshake that cannot succeed), on 429 and on 500/502/503/504;
* non-idempotent calls (POSTs, which create a paid job) are retried only when the server certainly did
  not act on them: a 429, or a connection that was never established. A POST that may have reached the
  server is never sent again by the hook;
* a POST that *may* have reached the server (the connection dropped after sending, a 5xx, a 2xx
  whose body is unreadable) is sent again only when the caller gave a ``reconcile`` callback: after
  the backoff wait the policy calls it to look for the job the lost POST may have created, returns
  that job if it finds one, and sends the POST again only if it did not (and attempts remain). The
  look happens after the last attempt too: that POST may have created, and billed, the job;
* the wait is the server's ``Retry-After`` when it gave one (seconds or HTTP-date, capped), otherwise
  exponential backoff with jitter.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from airflow_provider_chamelaion.exceptions import (
    ChamelaionRateLimitError,
    ChamelaionResponseError,
    ChamelaionServerError,
    ChamelaionTLSError,
    ChamelaionTransportError,
)

T = TypeVar("T")

log = logging.getLogger(__name__)

RETRYABLE_SERVER_STATUSES = frozenset({500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How the hook retries a failed call.

    :param max_attempts: attempts in all, the first included (1 disables retries).
    :param initial_backoff: seconds before the first retry when the server gave no ``Retry-After``;
        doubled for each further retry.
    :param max_backoff: cap on one backoff wait.
    :param max_retry_after: cap on a server-requested ``Retry-After`` wait, so a misbehaving server
        cannot park a task for hours.
    :param jitter: fraction of each backoff wait that is randomized (0 = none, 1 = "full jitter").
    :param retry_rate_limited: retry a 429 here (the default); ``False`` raises it at once, for a caller
        that paces many calls itself (a batch shares one pace among all its submitters).
    :param logger: where retries are logged (default this module's logger); a batch passes one that
        logs them at DEBUG and reports their count itself.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.5
    max_backoff: float = 20.0
    max_retry_after: float = 60.0
    jitter: float = 0.5
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    async_sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, repr=False, compare=False)
    retry_rate_limited: bool = True
    logger: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.initial_backoff, self.max_backoff, self.max_retry_after) < 0:
            raise ValueError("backoff and Retry-After caps must not be negative")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")

    def is_retryable(self, error: BaseException, *, idempotent: bool) -> bool:
        """Whether ``error`` may be retried for a call that is (or is not) idempotent."""
        if isinstance(error, ChamelaionRateLimitError):
            # 429 means the server refused the call without acting on it: safe even for a POST.
            return self.retry_rate_limited
        if isinstance(error, ChamelaionTLSError):
            return False  # a plain-HTTP server or an untrusted certificate: the same on every attempt
        if isinstance(error, ChamelaionTransportError):
            return idempotent or not error.sent
        if isinstance(error, ChamelaionServerError):
            return idempotent and error.status_code in RETRYABLE_SERVER_STATUSES
        return False

    @staticmethod
    def may_have_acted(error: BaseException) -> bool:
        """Whether the server may have acted on a call that failed with ``error`` (its answer was lost).

        A dropped connection after sending, a 5xx and a 2xx whose body is unreadable all leave that open;
        a 429 or a connection never established do not (:meth:`is_retryable` retries those), nor does
        a 4xx that refused the call.
        """
        if isinstance(error, ChamelaionTransportError):
            return error.sent
        return isinstance(error, (ChamelaionServerError, ChamelaionResponseError))

    def wait_before_retry(self, error: BaseException | None, retry_number: int) -> float:
        """Seconds to wait before retry number ``retry_number`` (1 for the first retry)."""
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), self.max_retry_after)
        backoff = min(self.max_backoff, self.initial_backoff * 2 ** max(0, retry_number - 1))
        return backoff * (1 - self.jitter) + random.uniform(0, backoff * self.jitter)

    def _after_failure(
        self, error: BaseException, attempt: int, *, idempotent: bool, what: str, can_look: bool
    ) -> tuple[float, bool]:
        """The one decision after ``attempt`` failed with ``error``, for both paths: wait this many seconds,
        then look for what the attempt did before sending it again (``True``) or send it again
        (``False``). Re-raises ``error`` when the call has failed for good."""
        logger = self.logger or log
        if attempt < self.max_attempts and self.is_retryable(error, idempotent=idempotent):
            delay = self.wait_before_retry(error, attempt)
            logger.warning(
                "%s failed (attempt %d of %d), retrying in %.1f s: %s",
                what,
                attempt,
                self.max_attempts,
                delay,
                error,
            )
            return delay, False
        if not can_look or idempotent or not self.may_have_acted(error):
            raise error
        delay = self.wait_before_retry(error, attempt)
        logger.warning(
            "%s may or may not have reached Chamelaion (attempt %d of %d): %s; looking for its result "
            "in %.1f s before sending it again",
            what,
            attempt,
            self.max_attempts,
            error,
            delay,
        )
        return delay, True

    def _found_nothing(self, error: BaseException, attempt: int, *, what: str) -> None:
        """After a look found nothing the lost attempt did: send it again, unless the attempts are used up."""
        if attempt >= self.max_attempts:
            raise error
        (self.logger or log).warning("%s left nothing on the server; sending it again", what)

    def call(
        self,
        attempt: Callable[[], T],
        *,
        idempotent: bool,
        what: str = "Chamelaion API call",
        reconcile: Callable[[BaseException], T | None] | None = None,
    ) -> T:
        """Run ``attempt`` until it succeeds, fails for good, or the attempts are used up (sync path).

        :param reconcile: for a non-idempotent call, called (after the backoff wait) when an attempt
            failed in a way that may have acted on the server; it returns what that attempt produced
            (e.g. the job it created) or ``None`` when it produced nothing, and only then is the call
            sent again. Without it such a call is never sent again.
        """
        number = 1
        while True:
            try:
                return attempt()
            except Exception as error:
                delay, look = self._after_failure(
                    error, number, idempotent=idempotent, what=what, can_look=reconcile is not None
                )
                self.sleep(delay)
                if look and reconcile is not None:
                    found = reconcile(error)
                    if found is not None:
                        return found
                    self._found_nothing(error, number, what=what)
            number += 1

    async def acall(
        self,
        attempt: Callable[..., Awaitable[T]],
        *args: Any,
        idempotent: bool,
        what: str = "Chamelaion API call",
        reconcile: Callable[[BaseException], Awaitable[T | None]] | None = None,
    ) -> T:
        """:meth:`call` for the async path: the same decisions, waits with ``asyncio.sleep``.

        :param args: passed to every ``attempt(*args)``. A trigger polls through here once per poll:
            a bound method and its arguments cost one tuple, where a closure built per call costs a
            function and a cell per captured name, all of which the garbage collector then tracks.
        """
        number = 1
        while True:
            try:
                return await attempt(*args)
            except Exception as error:
                delay, look = self._after_failure(
                    error, number, idempotent=idempotent, what=what, can_look=reconcile is not None
                )
                await self.async_sleep(delay)
                if look and reconcile is not None:
                    found = await reconcile(error)
                    if found is not None:
                        return found
                    self._found_nothing(error, number, what=what)
            number += 1


# Why a loop of our own rather than tenacity: building a tenacity retryer for each call leaves
# objects in reference cycles on every call, which a thousand triggers polling at once turn into
# frequent full garbage collections of the triggerer's heap, each one stopping its event loop. The
# loop above allocates nothing on the success path but the arguments' tuple.


__all__ = ["RetryPolicy"]
