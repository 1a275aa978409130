"""RetryPolicy: wait computation, and which errors are retried."""

from __future__ import annotations

import logging
import random
from typing import Any

import pytest

from airflow_provider_chamelaion.client import retry as retry_module
from airflow_provider_chamelaion.client.retry import RetryPolicy
from airflow_provider_chamelaion.exceptions import (
    ChamelaionAuthError,
    ChamelaionConfigError,
    ChamelaionRateLimitError,
    ChamelaionResponseError,
    ChamelaionServerError,
    ChamelaionTransportError,
    ChamelaionValidationError,
    error_for_status,
)


def _rate_limited(retry_after: float | None) -> ChamelaionRateLimitError:
    return ChamelaionRateLimitError(
        "slow down", status_code=429, method="GET", path="/v1/x", retry_after=retry_after
    )


class TestWaitBeforeRetry:
    def test_retry_after_is_used_as_is(self) -> None:
        policy = RetryPolicy(jitter=0.5)
        assert policy.wait_before_retry(_rate_limited(7.0), 1) == 7.0
        assert policy.wait_before_retry(_rate_limited(7.0), 4) == 7.0
        assert policy.wait_before_retry(_rate_limited(0.0), 1) == 0.0

    def test_retry_after_is_capped(self) -> None:
        assert RetryPolicy().wait_before_retry(_rate_limited(3600.0), 1) == 60.0
        assert RetryPolicy(max_retry_after=5.0).wait_before_retry(_rate_limited(30.0), 1) == 5.0
        assert RetryPolicy(max_retry_after=5.0).wait_before_retry(_rate_limited(float("inf")), 1) == 5.0

    def test_retry_after_on_a_server_error_is_honoured(self) -> None:
        error = ChamelaionServerError("down", status_code=503, method="GET", path="/p", retry_after=12.0)
        assert RetryPolicy().wait_before_retry(error, 1) == 12.0

    def test_exponential_growth_and_cap_without_jitter(self) -> None:
        policy = RetryPolicy(initial_backoff=0.5, max_backoff=20.0, jitter=0.0)
        waits = [policy.wait_before_retry(None, n) for n in range(1, 9)]
        assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0]

    def test_error_without_retry_after_backs_off(self) -> None:
        policy = RetryPolicy(initial_backoff=1.0, max_backoff=100.0, jitter=0.0)
        assert policy.wait_before_retry(_rate_limited(None), 3) == 4.0
        assert policy.wait_before_retry(ValueError("x"), 2) == 2.0
        assert policy.wait_before_retry(ChamelaionTransportError("reset"), 1) == 1.0

    def test_retry_number_zero_or_less_is_the_initial_backoff(self) -> None:
        policy = RetryPolicy(initial_backoff=0.5, jitter=0.0)
        assert policy.wait_before_retry(None, 0) == 0.5

    @pytest.mark.parametrize(("jitter", "low_fraction"), [(0.5, 0.5), (1.0, 0.0), (0.25, 0.75)])
    def test_jitter_bounds(self, monkeypatch: pytest.MonkeyPatch, jitter: float, low_fraction: float) -> None:
        policy = RetryPolicy(initial_backoff=2.0, max_backoff=100.0, jitter=jitter)
        backoff = 8.0  # retry 3: 2 * 2**2
        monkeypatch.setattr(random, "uniform", lambda a, b: a)
        assert policy.wait_before_retry(None, 3) == pytest.approx(backoff * low_fraction)
        monkeypatch.setattr(random, "uniform", lambda a, b: b)
        assert policy.wait_before_retry(None, 3) == pytest.approx(backoff)

    def test_jittered_waits_stay_in_bounds_and_vary(self) -> None:
        policy = RetryPolicy(initial_backoff=1.0, max_backoff=4.0, jitter=0.5)
        random.seed(1234)
        for retry_number, backoff in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 4.0)]:
            samples = [policy.wait_before_retry(None, retry_number) for _ in range(200)]
            assert all(backoff * 0.5 <= s <= backoff for s in samples)
            assert len(set(samples)) > 1

    def test_jitter_never_exceeds_the_cap(self) -> None:
        policy = RetryPolicy(initial_backoff=1.0, max_backoff=3.0, jitter=1.0)
        random.seed(99)
        assert all(0.0 <= policy.wait_before_retry(None, 10) <= 3.0 for _ in range(200))


class TestPolicyValidation:
    @pytest.mark.parametrize(
        "kwargs",
        [
            {"max_attempts": 0},
            {"max_attempts": -1},
            {"initial_backoff": -0.1},
            {"max_backoff": -1.0},
            {"max_retry_after": -1.0},
            {"jitter": -0.1},
            {"jitter": 1.5},
        ],
    )
    def test_rejects_bad_values(self, kwargs: dict) -> None:
        with pytest.raises(ValueError):
            RetryPolicy(**kwargs)

    def test_defaults(self) -> None:
        policy = RetryPolicy()
        assert policy.max_attempts == 5
        assert policy.max_retry_after == 60.0
        assert 0 <= policy.jitter <= 1


def _transport(sent: bool) -> ChamelaionTransportError:
    return ChamelaionTransportError("ReadTimeout: boom", method="POST", path="/p", sent=sent)


@pytest.mark.parametrize(
    ("error", "idempotent_retried", "post_retried"),
    [
        pytest.param(error_for_status(429, "m", method="GET", path="/p"), True, True, id="429"),
        pytest.param(
            error_for_status(429, "m", method="GET", path="/p", retry_after=3),
            True,
            True,
            id="429-retry-after",
        ),
        pytest.param(error_for_status(500, "m", method="GET", path="/p"), True, False, id="500"),
        pytest.param(error_for_status(502, "m", method="GET", path="/p"), True, False, id="502"),
        pytest.param(error_for_status(503, "m", method="GET", path="/p"), True, False, id="503"),
        pytest.param(error_for_status(504, "m", method="GET", path="/p"), True, False, id="504"),
        pytest.param(error_for_status(501, "m", method="GET", path="/p"), False, False, id="501"),
        pytest.param(error_for_status(505, "m", method="GET", path="/p"), False, False, id="505"),
        pytest.param(error_for_status(400, "m", method="GET", path="/p"), False, False, id="400"),
        pytest.param(error_for_status(401, "m", method="GET", path="/p"), False, False, id="401"),
        pytest.param(error_for_status(403, "m", method="GET", path="/p"), False, False, id="403"),
        pytest.param(error_for_status(404, "m", method="GET", path="/p"), False, False, id="404"),
        pytest.param(error_for_status(413, "m", method="GET", path="/p"), False, False, id="413"),
        pytest.param(error_for_status(422, "m", method="GET", path="/p"), False, False, id="422"),
        pytest.param(error_for_status(418, "m", method="GET", path="/p"), False, False, id="418"),
        pytest.param(_transport(sent=True), True, False, id="transport-maybe-sent"),
        pytest.param(_transport(sent=False), True, True, id="transport-never-sent"),
        pytest.param(
            ChamelaionResponseError("not json", status_code=200, method="GET", path="/p"),
            False,
            False,
            id="bad-json",
        ),
        pytest.param(ChamelaionConfigError("bad"), False, False, id="config"),
        pytest.param(ValueError("bad"), False, False, id="value-error"),
        pytest.param(ConnectionError("raw"), False, False, id="raw-connection-error"),
    ],
)
def test_is_retryable_matrix(error: BaseException, idempotent_retried: bool, post_retried: bool) -> None:
    policy = RetryPolicy()
    assert policy.is_retryable(error, idempotent=True) is idempotent_retried
    assert policy.is_retryable(error, idempotent=False) is post_retried


class _Flaky:
    """Fails with the given errors in turn, then returns "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def _run(policy: RetryPolicy, func: _Flaky, *, idempotent: bool) -> str:
    return policy.call(func, idempotent=idempotent, what="GET /p")


async def _arun(policy: RetryPolicy, func: _Flaky, *, idempotent: bool) -> str:
    async def attempt() -> str:
        return func()

    return await policy.acall(attempt, idempotent=idempotent, what="GET /p")


def _server(status: int = 503, retry_after: float | None = None) -> ChamelaionServerError:
    return ChamelaionServerError("down", status_code=status, method="GET", path="/p", retry_after=retry_after)


class TestRetrying:
    def test_retries_until_success_and_records_waits(self, sleeps: Any) -> None:
        policy = RetryPolicy(sleep=sleeps, initial_backoff=1.0, jitter=0.0)
        func = _Flaky(_server(), _server(), _rate_limited(9.0))
        assert _run(policy, func, idempotent=True) == "ok"
        assert func.calls == 4
        assert sleeps == [1.0, 2.0, 9.0]

    def test_stops_after_max_attempts_and_reraises_the_last_error(self, sleeps: Any) -> None:
        policy = RetryPolicy(sleep=sleeps, max_attempts=3)
        last = _server(504)
        func = _Flaky(_server(), _server(), last, _server())
        with pytest.raises(ChamelaionServerError) as info:
            _run(policy, func, idempotent=True)
        assert info.value is last
        assert func.calls == 3
        assert len(sleeps) == 2

    def test_one_attempt_means_no_retry(self, sleeps: Any) -> None:
        func = _Flaky(_server())
        with pytest.raises(ChamelaionServerError):
            _run(RetryPolicy(sleep=sleeps, max_attempts=1), func, idempotent=True)
        assert func.calls == 1
        assert sleeps == []

    def test_non_retryable_fails_at_once(self, sleeps: Any) -> None:
        func = _Flaky(error_for_status(401, "bad key", method="GET", path="/p"))
        with pytest.raises(ChamelaionAuthError):
            _run(RetryPolicy(sleep=sleeps), func, idempotent=True)
        assert func.calls == 1
        assert sleeps == []

    def test_post_is_not_retried_on_server_error(self, sleeps: Any) -> None:
        func = _Flaky(_server(503))
        with pytest.raises(ChamelaionServerError):
            _run(RetryPolicy(sleep=sleeps), func, idempotent=False)
        assert func.calls == 1

    def test_post_is_retried_on_rate_limit_and_never_sent(self, sleeps: Any) -> None:
        func = _Flaky(_rate_limited(2.0), _transport(sent=False))
        assert (
            _run(RetryPolicy(sleep=sleeps, jitter=0.0, initial_backoff=0.5), func, idempotent=False) == "ok"
        )
        assert func.calls == 3
        assert sleeps == [2.0, 1.0]

    def test_logs_a_warning_before_each_retry(self, sleeps: Any, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.WARNING, logger=retry_module.__name__)
        _run(RetryPolicy(sleep=sleeps, jitter=0.0), _Flaky(_rate_limited(4.0)), idempotent=True)
        messages = [r.getMessage() for r in caplog.records if r.name == retry_module.__name__]
        assert len(messages) == 1
        assert "GET /p failed (attempt 1 of 5), retrying in 4.0 s" in messages[0]

    async def test_async_retrying_makes_the_same_decisions(self, sleeps: Any) -> None:
        policy = RetryPolicy(sleep=sleeps, async_sleep=sleeps.async_sleep, jitter=0.0, initial_backoff=1.0)
        func = _Flaky(_server(), _rate_limited(5.0))
        assert await _arun(policy, func, idempotent=True) == "ok"
        assert func.calls == 3
        assert sleeps == [1.0, 5.0]

        post = _Flaky(_server())
        with pytest.raises(ChamelaionServerError):
            await _arun(policy, post, idempotent=False)
        assert post.calls == 1

    async def test_async_retrying_is_bounded(self, sleeps: Any) -> None:
        policy = RetryPolicy(sleep=sleeps, async_sleep=sleeps.async_sleep, max_attempts=2)
        func = _Flaky(_server(), _server(), _server())
        with pytest.raises(ChamelaionServerError):
            await _arun(policy, func, idempotent=True)
        assert func.calls == 2
        assert len(sleeps) == 1


class _Reconcile:
    """A ``reconcile`` callback answering from ``found`` in turn (``None``: the lost call left nothing)."""

    def __init__(self, *found: str | None) -> None:
        self.found = list(found)
        self.errors: list[BaseException] = []

    def __call__(self, error: BaseException) -> str | None:
        self.errors.append(error)
        return self.found.pop(0)

    async def async_call(self, error: BaseException) -> str | None:
        return self(error)


def _post_error(kind: str) -> BaseException:
    if kind == "dropped-after-sending":
        return _transport(sent=True)
    if kind == "unreadable-answer":
        return ChamelaionResponseError("not JSON", status_code=200, method="POST", path="/p")
    return _server(int(kind))


class TestReconcilingAPost:
    """One place decides when a POST is sent again: the policy, asking ``reconcile`` first."""

    @pytest.mark.parametrize("kind", ["dropped-after-sending", "unreadable-answer", "500", "503"])
    def test_a_lost_answer_is_looked_for_and_the_found_job_returned(self, sleeps: Any, kind: str) -> None:
        func = _Flaky(_post_error(kind))
        reconcile = _Reconcile("job-1")
        policy = RetryPolicy(sleep=sleeps, jitter=0.0, initial_backoff=0.5)
        assert policy.call(func, idempotent=False, reconcile=reconcile) == "job-1"
        assert func.calls == 1  # never sent again
        assert len(reconcile.errors) == 1
        assert sleeps == [0.5]  # the backoff wait comes before the look

    def test_nothing_found_sends_again(self, sleeps: Any) -> None:
        func = _Flaky(_server(503), _transport(sent=True))
        reconcile = _Reconcile(None, None)
        assert RetryPolicy(sleep=sleeps).call(func, idempotent=False, reconcile=reconcile) == "ok"
        assert func.calls == 3
        assert len(reconcile.errors) == 2

    @pytest.mark.parametrize("max_attempts", [1, 3])
    def test_the_last_attempt_is_looked_for_too(self, sleeps: Any, max_attempts: int) -> None:
        func = _Flaky(*[_server(502)] * max_attempts)
        found = RetryPolicy(sleep=sleeps, max_attempts=max_attempts).call(
            func, idempotent=False, reconcile=_Reconcile(*[None] * (max_attempts - 1), "job-9")
        )
        assert found == "job-9"
        assert func.calls == max_attempts

    def test_nothing_found_after_the_last_attempt_raises_its_error(self, sleeps: Any) -> None:
        last = _server(504)
        func = _Flaky(_server(502), last)
        with pytest.raises(ChamelaionServerError) as info:
            RetryPolicy(sleep=sleeps, max_attempts=2).call(
                func, idempotent=False, reconcile=_Reconcile(None, None)
            )
        assert info.value is last

    def test_a_failing_look_up_raises_and_nothing_is_sent_again(self, sleeps: Any) -> None:
        def broken(error: BaseException) -> str | None:
            raise error_for_status(401, "revoked", method="GET", path="/requests")

        func = _Flaky(_transport(sent=True))
        with pytest.raises(ChamelaionAuthError):
            RetryPolicy(sleep=sleeps).call(func, idempotent=False, reconcile=broken)
        assert func.calls == 1

    @pytest.mark.parametrize(
        "error",
        [
            _rate_limited(0.0),
            _transport(sent=False),
            error_for_status(422, "bad body", method="POST", path="/p"),
        ],
        ids=["429", "never-sent", "422"],
    )
    def test_not_looked_for_when_the_server_certainly_did_nothing(self, sleeps: Any, error: Any) -> None:
        reconcile = _Reconcile()
        func = _Flaky(error)
        try:
            RetryPolicy(sleep=sleeps).call(func, idempotent=False, reconcile=reconcile)
        except ChamelaionValidationError:
            assert func.calls == 1  # refused: not sent again either
        assert reconcile.errors == []

    def test_never_used_for_idempotent_calls(self, sleeps: Any) -> None:
        reconcile = _Reconcile()
        assert RetryPolicy(sleep=sleeps).call(_Flaky(_server()), idempotent=True, reconcile=reconcile) == "ok"
        assert reconcile.errors == []

    async def test_async_makes_the_same_decisions(self, sleeps: Any) -> None:
        policy = RetryPolicy(sleep=sleeps, async_sleep=sleeps.async_sleep, jitter=0.0, initial_backoff=1.0)
        func = _Flaky(_server(503), _transport(sent=True))
        reconcile = _Reconcile(None, "job-2")

        async def attempt() -> str:
            return func()

        assert await policy.acall(attempt, idempotent=False, reconcile=reconcile.async_call) == "job-2"
        assert func.calls == 2
        assert sleeps == [1.0, 2.0]
