"""Fault matrix: every HTTP call the provider makes, against every fault the simulator injects, on real sockets.

Each case asserts the outcome (success, or the typed error) AND the exact number of HTTP calls the
simulator saw (``state.calls``), plus the retry waits the policy chose (recorded, never slept). The
measured matrix is printed at the end of the module (``pytest -s``) as "fault x call -> outcome, HTTP
calls".

Then the scenarios a matrix cannot express: the trigger under faults mid-wait (and across a triggerer
restart), and downloads cut mid-body or refused because the output URL expired.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import pytest

from airflow_provider_chamelaion.client.models import LipsyncRequest
from airflow_provider_chamelaion.client.retry import RetryPolicy
from airflow_provider_chamelaion.exceptions import (
    ChamelaionAPIError,
    ChamelaionAuthError,
    ChamelaionNotFoundError,
    ChamelaionResponseError,
    ChamelaionServerError,
    ChamelaionTransportError,
    ChamelaionValidationError,
)
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
from airflow_provider_chamelaion.operators.lipsync import LipsyncGenerateOperator
from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig
from airflow_provider_chamelaion.simulator.process import free_port
from airflow_provider_chamelaion.simulator.state import CallRecord, Job
from airflow_provider_chamelaion.triggers.lipsync import LipsyncRequestTrigger
from airflow_provider_chamelaion.version_compat import TriggerEvent
from tests.harness.constants import API_KEY, connection_json
from tests.harness.retry import RecordedSleeps
from tests.harness.triggers import class_at, collect, only_event, polls, wait_until

MAX_ATTEMPTS = RetryPolicy().max_attempts
#: The read timeout of every hook in this module; a ``slow`` fault answers well after it.
READ_TIMEOUT = 0.3
SLOW_DELAY = 0.8
OUTPUT_SIZE = 64 * 1024
POLL = 0.05
VIDEO_URL = "https://media.test/matrix/video.mp4"
AUDIO_URL = "https://media.test/matrix/audio.wav"


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    """No phases: a job is completed as soon as it exists (the trigger tests pin statuses explicitly)."""
    return SimulatorConfig(api_key=API_KEY, phases=(), output_size=OUTPUT_SIZE)


# -- the measured matrix ----------------------------------------------------------------------------------


@dataclass
class MatrixRow:
    fault: str
    call: str
    outcome: str
    calls: int
    note: str = ""


MATRIX: list[MatrixRow] = []
SCENARIOS: list[MatrixRow] = []


def _short(outcome: str) -> str:
    return outcome.removeprefix("Chamelaion")


def format_matrix(rows: list[MatrixRow], scenarios: list[MatrixRow]) -> str:
    """The matrix as a markdown table: one row per fault, one column per call, "outcome, HTTP calls"."""
    faults = list(dict.fromkeys(row.fault for row in rows))
    calls = list(dict.fromkeys(row.call for row in rows))
    cells = {(row.fault, row.call): row for row in rows}
    lines = [
        "fault x call -> outcome, HTTP calls",
        "",
        "| fault | " + " | ".join(f"`{call}`" for call in calls) + " |",
        "|---|" + "---|" * len(calls),
    ]
    for fault in faults:
        row_cells = []
        for call in calls:
            cell = cells.get((fault, call))
            if cell is None:
                row_cells.append("n/a")
            else:
                note = f"; {cell.note}" if cell.note else ""
                row_cells.append(f"{_short(cell.outcome)}, {cell.calls}{note}")
        lines.append(f"| {fault} | " + " | ".join(row_cells) + " |")
    if scenarios:
        lines += ["", "| scenario | call | outcome | HTTP calls |", "|---|---|---|---|"]
        lines += [
            f"| {row.fault} | `{row.call}` | {_short(row.outcome)}{'; ' + row.note if row.note else ''} "
            f"| {row.calls} |"
            for row in scenarios
        ]
    return "\n".join(lines)


def print_matrix() -> None:
    print("\n" + format_matrix(MATRIX, SCENARIOS) + "\n")


@pytest.fixture(scope="module", autouse=True)
def _print_matrix_at_the_end() -> Iterator[None]:
    yield
    if MATRIX or SCENARIOS:
        print_matrix()


# -- helpers ----------------------------------------------------------------------------------------------


def make_hook(
    sleeps: RecordedSleeps, *, max_retry_after: float = 60.0, read_timeout: float = 5.0
) -> ChamelaionHook:
    policy = RetryPolicy(sleep=sleeps, async_sleep=sleeps.async_sleep, max_retry_after=max_retry_after)
    return ChamelaionHook(retry_policy=policy, timeout=(2, read_timeout), download_timeout=(2, read_timeout))


def settled(calls: Callable[[], list[CallRecord]], count: int) -> list[CallRecord]:
    """The recorded calls once at least ``count`` are in.

    The simulator logs a call just after answering it (a ``slow`` call only once its late answer is
    out), so the last call can land in the log a moment after the client moved on: wait for it
    (bounded), then give stragglers a moment to show up too.
    """
    deadline = time.monotonic() + 10
    while len(calls()) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    return calls()


def expected_output(job_id: str) -> bytes:
    """The bytes the simulator serves as a job's output."""
    block = f"chamelaion-simulated-output:{job_id}:".encode() * (OUTPUT_SIZE // 20 + 1)
    return block[:OUTPUT_SIZE]


def new_job(simulator: Simulator, reference_id: str | None = None) -> Job:
    """A job made directly in the simulator's state: no HTTP call is logged."""
    return simulator.state.create_job(
        reference_id=reference_id, source="urls", inputs={"video": VIDEO_URL, "audio": AUDIO_URL}
    )


def http_date(seconds_ahead: float) -> str:
    return email.utils.format_datetime(
        datetime.now(timezone.utc) + timedelta(seconds=seconds_ahead), usegmt=True
    )


# -- the fault and call axes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultCase:
    """One row of the matrix: how the fault is scripted, and the hook settings it is run with.

    :param build: the ``Fault`` fields (built when injected: an HTTP-date must be fresh).
    :param max_retry_after: the hook's ``RetryPolicy.max_retry_after``.
    :param read_timeout: the hook's read timeout (short only where a slow answer must time out, so a
        busy machine cannot turn an ordinary answer into an extra call).
    """

    id: str
    build: Callable[[], dict[str, Any]]
    max_retry_after: float = 60.0
    read_timeout: float = 5.0


PERSISTENT = 50  # "every time": more than any call's attempts
HTML_502 = (
    "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1>"
    "<hr><center>nginx</center></body></html>"
)

FAULTS: list[FaultCase] = [
    FaultCase("503 x3", lambda: {"kind": "status", "status": 503, "times": 3}),
    FaultCase("429 Retry-After: 1", lambda: {"kind": "status", "status": 429, "retry_after": "1"}),
    FaultCase(
        "429 Retry-After: 1, cap 0.25 s",
        lambda: {"kind": "status", "status": 429, "retry_after": "1"},
        max_retry_after=0.25,
    ),
    FaultCase(
        "429 Retry-After: HTTP-date +2 s",
        lambda: {"kind": "status", "status": 429, "retry_after": http_date(2)},
    ),
    FaultCase(
        "429 Retry-After: HTTP-date +2 s, cap 0.25 s",
        lambda: {"kind": "status", "status": 429, "retry_after": http_date(2)},
        max_retry_after=0.25,
    ),
    FaultCase("drop (no answer, not acted on)", lambda: {"kind": "drop"}),
    FaultCase("drop_after (acted on, no answer)", lambda: {"kind": "drop_after"}),
    FaultCase("truncate (body cut after 10 bytes)", lambda: {"kind": "truncate", "cut_at": 10}),
    FaultCase(
        f"slow {SLOW_DELAY} s > read timeout {READ_TIMEOUT} s",
        lambda: {"kind": "slow", "delay": SLOW_DELAY},
        read_timeout=READ_TIMEOUT,
    ),
    FaultCase(
        "502 text/html, every time",
        lambda: {
            "kind": "status",
            "status": 502,
            "body": HTML_502,
            "content_type": "text/html",
            "times": PERSISTENT,
        },
    ),
    FaultCase("200 malformed JSON", lambda: {"kind": "malformed"}),
    FaultCase("401", lambda: {"kind": "status", "status": 401, "times": PERSISTENT}),
    FaultCase("403", lambda: {"kind": "status", "status": 403, "times": PERSISTENT}),
    FaultCase("404", lambda: {"kind": "status", "status": 404, "times": PERSISTENT}),
    FaultCase("422", lambda: {"kind": "status", "status": 422, "times": PERSISTENT}),
]


@dataclass
class Ctx:
    simulator: Simulator
    hook: ChamelaionHook
    tmp_path: Path
    job: Job
    lipsync: LipsyncRequest | None = None


@dataclass(frozen=True)
class CallCase:
    """One column of the matrix: a call, and where its faults are scripted.

    ``run(ctx, inject)`` makes the call and calls ``inject()`` at the moment the fault must be in place.
    """

    id: str
    method: str
    fault_path: str
    run: Callable[[Ctx, Callable[[], None]], Any]
    prepare: Callable[[Ctx], None] = lambda ctx: None


def _get_request(ctx: Ctx, inject: Callable[[], None]) -> Any:
    inject()
    return ctx.hook.get_request(ctx.job.id)


def _list_requests(ctx: Ctx, inject: Callable[[], None]) -> Any:
    inject()
    return ctx.hook.list_requests(limit=10)


def _prepare_pages(ctx: Ctx) -> None:
    new_job(ctx.simulator)
    new_job(ctx.simulator)  # three jobs, two per page: two pages


def _iter_requests_second_page(ctx: Ctx, inject: Callable[[], None]) -> Any:
    pages = ctx.hook.iter_requests(page_size=2)
    first = [next(pages), next(pages)]  # the first page is in; the fault hits the second one
    inject()
    return first + list(pages)


def _aget_request(ctx: Ctx, inject: Callable[[], None]) -> Any:
    inject()
    return asyncio.run(ctx.hook.aget_request(ctx.job.id))


def _prepare_download(ctx: Ctx) -> None:
    ctx.lipsync = ctx.hook.get_request(ctx.job.id)  # before counting starts
    assert ctx.lipsync.output_url


def _download_output(ctx: Ctx, inject: Callable[[], None]) -> Any:
    inject()
    assert ctx.lipsync is not None
    return ctx.hook.download_output(ctx.lipsync, ctx.tmp_path / "out" / "output.mp4")


def _generate(ctx: Ctx, inject: Callable[[], None]) -> Any:
    inject()
    return ctx.hook.generate(VIDEO_URL, AUDIO_URL, reference_id="matrix-post")


CALLS: list[CallCase] = [
    CallCase("get_request", "GET", r"^/api/v1/lipsync/requests/[^/]+$", _get_request),
    CallCase("list_requests", "GET", r"^/api/v1/lipsync/requests$", _list_requests),
    CallCase(
        "iter_requests (2nd page)",
        "GET",
        r"^/api/v1/lipsync/requests$",
        _iter_requests_second_page,
        _prepare_pages,
    ),
    CallCase("aget_request", "GET", r"^/api/v1/lipsync/requests/[^/]+$", _aget_request),
    CallCase("download_output", "GET", r"^/outputs/", _download_output, _prepare_download),
    CallCase("generate (POST)", "POST", r"^/api/v1/lipsync/generate$", _generate),
]


@dataclass(frozen=True)
class Expect:
    """One cell of the matrix: what must happen.

    :param error: the typed error the call ends in, ``None`` for success.
    :param calls: HTTP calls the simulator sees, from the call's first to its last.
    :param waits: checks the retry waits the policy chose (recorded, never slept).
    :param jobs: for the POST: jobs the simulator holds afterwards (besides the fixture's).
    """

    error: type[ChamelaionAPIError] | None
    calls: int
    waits: Callable[[list[float]], bool]
    jobs: int | None = None
    note: str = ""


def exactly(*expected: float) -> Callable[[list[float]], bool]:
    return lambda waits: waits == list(expected)


def backoffs(count: int) -> Callable[[list[float]], bool]:
    """``count`` backoff waits with jitter (the policy's default caps them at 20 s)."""
    return lambda waits: len(waits) == count and all(0 <= wait <= 20 for wait in waits)


def between(low: float, high: float) -> Callable[[list[float]], bool]:
    return lambda waits: len(waits) == 1 and low <= waits[0] <= high


NO_WAITS = exactly()
# The HTTP-date has whole seconds: the wait is (1, 2] s less the time the call took.
DATE_WAIT = between(0.5, 2.0)


def ok(calls: int, waits: Callable[[list[float]], bool] = NO_WAITS, *, jobs: int | None = None) -> Expect:
    return Expect(None, calls, waits, jobs)


def fail(
    error: type[ChamelaionAPIError],
    calls: int,
    waits: Callable[[list[float]], bool] = NO_WAITS,
    *,
    jobs: int | None = None,
    note: str = "",
) -> Expect:
    return Expect(error, calls, waits, jobs, note)


Transport, Server, Response = ChamelaionTransportError, ChamelaionServerError, ChamelaionResponseError
Auth, NotFound, Validation = ChamelaionAuthError, ChamelaionNotFoundError, ChamelaionValidationError
REFRESHED = "after 1 URL refresh"
ACTED = "job created"
NA = None  # the pair makes no sense: an output is bytes, there is no JSON to be malformed

#: Every (fault x call) outcome, written down - not derived from the retry rules, so the test cannot
#: agree with a bug in them. Columns in the order of CALLS. What the rows encode:
#: * GETs retry transport errors, 429 and 5xx, up to 5 attempts; 4xx and a malformed 200 fail at once;
#: * a POST retries only a 429: anything else may have reached the server (drop_after and truncate
#:   act, then lose the answer: a job exists; a ``slow`` POST is abandoned before the simulator reads
#:   the body: none);
#: * a refused output URL (401/403/404) is refreshed once: GET the request again, try the new URL;
#: * ``aget_request`` runs on aiohttp, which itself re-sends an idempotent GET once when the connection
#:   closes before any answer (RFC 9112 9.3.1): a drop costs a second call but no retry wait.
# fmt: off
EXPECTED: dict[str, tuple[Expect | None, ...]] = {
    #                                              get_request           list_requests         iter_requests (2nd page)  aget_request          download_output                   generate (POST)
    "503 x3":                                      (ok(4, backoffs(3)),  ok(4, backoffs(3)),  ok(5, backoffs(3)),       ok(4, backoffs(3)),  ok(4, backoffs(3)),               fail(Server, 1, jobs=0)),
    "429 Retry-After: 1":                          (ok(2, exactly(1.0)), ok(2, exactly(1.0)), ok(3, exactly(1.0)),      ok(2, exactly(1.0)), ok(2, exactly(1.0)),              ok(2, exactly(1.0), jobs=1)),
    "429 Retry-After: 1, cap 0.25 s":              (ok(2, exactly(0.25)), ok(2, exactly(0.25)), ok(3, exactly(0.25)),   ok(2, exactly(0.25)), ok(2, exactly(0.25)),            ok(2, exactly(0.25), jobs=1)),
    "429 Retry-After: HTTP-date +2 s":             (ok(2, DATE_WAIT),    ok(2, DATE_WAIT),    ok(3, DATE_WAIT),         ok(2, DATE_WAIT),    ok(2, DATE_WAIT),                 ok(2, DATE_WAIT, jobs=1)),
    "429 Retry-After: HTTP-date +2 s, cap 0.25 s": (ok(2, exactly(0.25)), ok(2, exactly(0.25)), ok(3, exactly(0.25)),   ok(2, exactly(0.25)), ok(2, exactly(0.25)),            ok(2, exactly(0.25), jobs=1)),
    "drop (no answer, not acted on)":              (ok(2, backoffs(1)),  ok(2, backoffs(1)),  ok(3, backoffs(1)),       ok(2),               ok(2, backoffs(1)),               fail(Transport, 1, jobs=0)),
    "drop_after (acted on, no answer)":            (ok(2, backoffs(1)),  ok(2, backoffs(1)),  ok(3, backoffs(1)),       ok(2),               ok(2, backoffs(1)),               fail(Transport, 1, jobs=1, note=ACTED)),
    "truncate (body cut after 10 bytes)":          (ok(2, backoffs(1)),  ok(2, backoffs(1)),  ok(3, backoffs(1)),       ok(2, backoffs(1)),  ok(2, backoffs(1)),               fail(Transport, 1, jobs=1, note=ACTED)),
    f"slow {SLOW_DELAY} s > read timeout {READ_TIMEOUT} s":
                                                   (ok(2, backoffs(1)),  ok(2, backoffs(1)),  ok(3, backoffs(1)),       ok(2, backoffs(1)),  ok(2, backoffs(1)),               fail(Transport, 1, jobs=0)),
    "502 text/html, every time":                   (fail(Server, 5, backoffs(4)), fail(Server, 5, backoffs(4)), fail(Server, 6, backoffs(4)), fail(Server, 5, backoffs(4)), fail(Server, 5, backoffs(4)), fail(Server, 1, jobs=0)),
    "200 malformed JSON":                          (fail(Response, 1),   fail(Response, 1),   fail(Response, 2),        fail(Response, 1),   NA,                               fail(Response, 1, jobs=0)),
    "401":                                         (fail(Auth, 1),       fail(Auth, 1),       fail(Auth, 2),            fail(Auth, 1),       fail(Auth, 3, note=REFRESHED),    fail(Auth, 1, jobs=0)),
    "403":                                         (fail(Auth, 1),       fail(Auth, 1),       fail(Auth, 2),            fail(Auth, 1),       fail(Auth, 3, note=REFRESHED),    fail(Auth, 1, jobs=0)),
    "404":                                         (fail(NotFound, 1),   fail(NotFound, 1),   fail(NotFound, 2),        fail(NotFound, 1),   fail(NotFound, 3, note=REFRESHED), fail(NotFound, 1, jobs=0)),
    "422":                                         (fail(Validation, 1), fail(Validation, 1), fail(Validation, 2),      fail(Validation, 1), fail(Validation, 1),              fail(Validation, 1, jobs=0)),
}
# fmt: on


def test_the_table_covers_every_fault_and_call() -> None:
    assert list(EXPECTED) == [fault.id for fault in FAULTS]
    assert all(len(row) == len(CALLS) for row in EXPECTED.values())


def expectation(fault: FaultCase, call: CallCase) -> Expect | None:
    """The table's cell for this pair; ``None`` where the pair makes no sense."""
    return EXPECTED[fault.id][CALLS.index(call)]


MATRIX_CASES = [
    pytest.param(fault, call, id=f"{fault.id} x {call.id}")
    for fault in FAULTS
    for call in CALLS
    if expectation(fault, call) is not None
]


@pytest.mark.parametrize(("fault", "call"), MATRIX_CASES)
def test_fault_matrix(
    fault: FaultCase, call: CallCase, simulator: Simulator, sleeps: RecordedSleeps, tmp_path: Path
) -> None:
    expect = expectation(fault, call)
    assert expect is not None
    state = simulator.state
    hook = make_hook(sleeps, max_retry_after=fault.max_retry_after, read_timeout=fault.read_timeout)
    ctx = Ctx(simulator, hook, tmp_path, new_job(simulator))
    call.prepare(ctx)
    jobs_before = len(state.jobs)
    before = len(settled(lambda: state.calls, len(state.calls)))

    def inject() -> None:
        state.add_fault(method=call.method, path=call.fault_path, **fault.build())

    error: BaseException | None = None
    result: Any = None
    try:
        result = call.run(ctx, inject)
    except Exception as err:
        error = err
    made = settled(lambda: state.calls, before + expect.calls)[before:]
    state.clear_faults()
    outcome = "ok" if error is None else type(error).__name__
    MATRIX.append(MatrixRow(fault.id, call.id, outcome, len(made), expect.note))

    # The outcome.
    if expect.error is None:
        assert error is None, f"expected success, got {error!r}"
    else:
        assert type(error) is expect.error, f"expected {expect.error.__name__}, got {error!r}"
        assert isinstance(error, ChamelaionAPIError)
        assert not isinstance(error, json.JSONDecodeError)
        assert error.__cause__ is None or not isinstance(error.__cause__, json.JSONDecodeError)
        assert API_KEY not in str(error)
    # The number of HTTP calls, and where they went.
    assert len(made) == expect.calls, [(c.method, c.path, c.status, c.fault) for c in made]
    faulted = [c for c in made if c.fault]
    assert faulted, "the fault was never applied"
    assert all(c.method == call.method for c in faulted)
    # The waits the retry policy chose.
    assert expect.waits(list(sleeps)), f"unexpected retry waits {list(sleeps)}"

    if call.id == "download_output":
        files = sorted(p.name for p in (tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else []
        if error is None:
            assert result == tmp_path / "out" / "output.mp4"
            assert files == ["output.mp4"]  # and no temporary file left beside it
            assert result.read_bytes() == expected_output(ctx.job.id)
        else:
            assert files == []
    elif call.method == "POST":
        assert expect.jobs is not None
        assert len(state.jobs) - jobs_before == expect.jobs
        if error is None:
            assert result in state.jobs
        if isinstance(error, ChamelaionTransportError):
            assert error.sent, "a POST whose connection was established may have reached the server"
    elif error is None:
        if call.id.startswith(("list", "iter")):
            items = result.data if call.id.startswith("list") else result
            assert {item.id for item in items} == set(state.jobs)
        else:
            assert isinstance(result, LipsyncRequest)
            assert result.id == ctx.job.id
            assert result.status == "completed"
    if isinstance(error, ChamelaionServerError) and fault.id.startswith("502"):
        # A proxy's HTML error page becomes a short readable message, not markup.
        assert "502 Bad Gateway" in error.message
        assert "text/html" in error.message
        assert "<" not in error.message
        assert str(error).startswith(f"Chamelaion API {call.method} ")


def test_matrix_table_format() -> None:
    rows = [
        MatrixRow("503 x3", "get_request", "ok", 4),
        MatrixRow("401", "get_request", "ChamelaionAuthError", 1),
        MatrixRow("401", "download_output", "ChamelaionAuthError", 3, "after 1 URL refresh"),
    ]
    table = format_matrix(rows, [MatrixRow("trigger: 401 mid-wait", "run", "error event", 3)])
    assert table.splitlines()[0] == "fault x call -> outcome, HTTP calls"
    assert "| 503 x3 | ok, 4 | n/a |" in table
    assert "| 401 | AuthError, 1 | AuthError, 3; after 1 URL refresh |" in table
    assert "| trigger: 401 mid-wait | `run` | error event | 3 |" in table


# -- POST /generate: never sent twice ---------------------------------------------------------------------


def test_post_answer_lost_after_the_job_was_created_is_not_resent(
    simulator: Simulator, sleeps: RecordedSleeps
) -> None:
    state = simulator.state
    hook = make_hook(sleeps)
    state.add_fault(kind="drop_after", method="POST", path="/generate$")

    with pytest.raises(ChamelaionTransportError) as info:
        hook.generate(VIDEO_URL, AUDIO_URL, reference_id="lost-answer")

    posts = settled(lambda: state.calls_to("POST", "/generate$"), 1)
    assert len(posts) == 1
    assert info.value.sent is True
    assert info.value.method == "POST"
    assert len(state.jobs) == 1
    assert next(iter(state.jobs.values())).reference_id == "lost-answer"
    assert sleeps == []
    SCENARIOS.append(
        MatrixRow(
            "POST accepted, connection dropped before the answer", "generate", "TransportError", 1, "1 job"
        )
    )


def test_post_429_is_retried_and_creates_one_job(simulator: Simulator, sleeps: RecordedSleeps) -> None:
    state = simulator.state
    hook = make_hook(sleeps)
    state.add_fault(kind="status", status=429, retry_after="1", method="POST", path="/generate$", times=2)

    request_id = hook.generate(VIDEO_URL, AUDIO_URL)

    assert len(settled(lambda: state.calls_to("POST", "/generate$"), 3)) == 3
    assert list(state.jobs) == [request_id]
    assert sleeps == [1.0, 1.0]
    SCENARIOS.append(MatrixRow("POST 429 x2 (Retry-After: 1)", "generate", "ok", 3, "1 job"))


def test_post_503_is_not_retried(simulator: Simulator, sleeps: RecordedSleeps) -> None:
    state = simulator.state
    hook = make_hook(sleeps)
    state.add_fault(kind="status", status=503, method="POST", path="/generate$", times=3)

    with pytest.raises(ChamelaionServerError) as info:
        hook.generate(VIDEO_URL, AUDIO_URL)

    assert info.value.status_code == 503
    assert len(settled(lambda: state.calls_to("POST"), 1)) == 1
    assert state.jobs == {}
    assert sleeps == []


def test_connection_refused_is_retried_even_for_a_post(
    monkeypatch: pytest.MonkeyPatch, sleeps: RecordedSleeps
) -> None:
    """Nothing listening: the request certainly never reached a server, so even a POST is sent again."""
    nothing_listening = f"http://127.0.0.1:{free_port()}/api"
    monkeypatch.setenv("AIRFLOW_CONN_CHAMELAION_DEFAULT", connection_json(nothing_listening))
    hook = make_hook(sleeps)

    with pytest.raises(ChamelaionTransportError) as info:
        hook.generate(VIDEO_URL, AUDIO_URL)

    assert info.value.sent is False
    assert len(sleeps) == MAX_ATTEMPTS - 1  # every attempt made, each one refused
    assert API_KEY not in str(info.value)
    SCENARIOS.append(
        MatrixRow(
            "POST, connection refused (nothing listening)",
            "generate",
            "TransportError (sent=False) after 5 attempts",
            0,
            "retried: never reached a server",
        )
    )


SUBMISSION_FAULTS: dict[str, tuple[dict[str, Any], int]] = {
    "drop_after": ({"kind": "drop_after"}, 1),
    "truncate": ({"kind": "truncate", "cut_at": 10}, 1),
    "503": ({"kind": "status", "status": 503}, 2),
    "slow": ({"kind": "slow", "delay": SLOW_DELAY}, 2),
}


@pytest.mark.parametrize("fault_id", list(SUBMISSION_FAULTS))
def test_operator_looks_before_submitting_again_after_an_ambiguous_post(
    fault_id: str, simulator: Simulator, sleeps: RecordedSleeps
) -> None:
    """The hook never re-sends; the operator checks by reference_id, then submits again only if needed."""
    fault, posts = SUBMISSION_FAULTS[fault_id]
    state = simulator.state
    operator = LipsyncGenerateOperator(
        task_id="submit", video_url=VIDEO_URL, audio_url=AUDIO_URL, reference_id=f"ambiguous-{fault_id}"
    )
    operator.__dict__["hook"] = make_hook(sleeps, read_timeout=READ_TIMEOUT)  # the cached_property
    state.add_fault(method="POST", path="/generate$", **fault)

    request_id = operator.submit_or_reuse(cast(Any, {}))

    made_posts = settled(lambda: state.calls_to("POST", "/generate$"), posts)
    assert len(made_posts) == posts
    assert list(state.jobs) == [request_id]  # exactly one job, the one returned
    assert state.jobs[request_id].reference_id == f"ambiguous-{fault_id}"
    lookups = state.calls_to("GET", "/requests$")
    # One look before the first POST (the ids the reference_id already has: none is this task's), one
    # between the failed POST and any new one.
    assert len(lookups) == 2
    SCENARIOS.append(
        MatrixRow(
            f"operator submit: POST {fault_id} once",
            "LipsyncGenerateOperator.submit_or_reuse",
            "ok, 1 job" + (" (found by reference_id)" if posts == 1 else " (none found, POSTed again)"),
            len(settled(lambda: state.calls, posts + 2)),
        )
    )


# -- the trigger ------------------------------------------------------------------------------------------


@pytest.fixture
def trigger_sleeps(monkeypatch: pytest.MonkeyPatch) -> RecordedSleeps:
    """The trigger's hook: this module's timeouts, retry waits recorded instead of slept."""
    recorded = RecordedSleeps()

    def hook(self: LipsyncRequestTrigger) -> ChamelaionHook:
        return ChamelaionHook(
            self.chamelaion_conn_id,
            retry_policy=RetryPolicy(sleep=recorded, async_sleep=recorded.async_sleep),
            timeout=(2, READ_TIMEOUT),
        )

    monkeypatch.setattr(LipsyncRequestTrigger, "_hook", hook)
    return recorded


async def trigger_waiting(
    simulator: Simulator, status: str, *, polled: int = 2
) -> tuple[Job, asyncio.Task[list[TriggerEvent]]]:
    """A job pinned at ``status``, and a trigger waiting on it that has polled it ``polled`` times."""
    job = new_job(simulator)
    simulator.state.force_status(job.id, status)
    task = asyncio.ensure_future(collect(LipsyncRequestTrigger(job.id, poll_interval=POLL)))
    await wait_until(lambda: len(polls(simulator, job.id)) >= polled)
    return job, task


async def test_trigger_survives_transient_faults_mid_wait(
    simulator: Simulator, trigger_sleeps: RecordedSleeps
) -> None:
    job, task = await trigger_waiting(simulator, "running")

    path = f"/requests/{job.id}$"
    simulator.state.add_fault(kind="status", status=503, path=path, times=3)
    simulator.state.add_fault(kind="drop", path=path)
    simulator.state.add_fault(kind="slow", delay=SLOW_DELAY, path=path)
    simulator.state.add_fault(
        kind="status", status=502, path=path, content_type="text/html", body="<h1>x</h1>"
    )
    simulator.state.add_fault(kind="status", status=429, retry_after="0", path=path)
    simulator.state.add_fault(kind="malformed", path=path)
    simulator.state.add_fault(kind="truncate", cut_at=10, path=path)
    await wait_until(lambda: not simulator.state.faults)
    await wait_until(lambda: polls(simulator, job.id)[-1].fault is None)
    assert not task.done(), "a transient fault ended the wait"

    simulator.state.force_status(job.id, "completed")
    event = only_event(await task)

    assert event["status"] == "completed"
    assert event["request_id"] == job.id
    assert "output_url" not in event  # the worker fetches the request (and its signed URL) on resume
    # A slow call is logged only when its late answer goes out: wait for all nine faulted calls.
    settled(lambda: [c for c in polls(simulator, job.id) if c.fault], 9)
    made = polls(simulator, job.id)
    assert sorted(c.fault or "" for c in made if c.fault) == sorted(
        ["status"] * 5 + ["drop", "slow", "malformed", "truncate"]
    )
    # The trigger polls on a shared aiohttp session, which itself re-sends a GET once when a reused
    # keep-alive connection is closed under it: the drop is absorbed there and the re-sent GET meets
    # the next fault. Poll A: 503, 503, 503, drop+slow, 502: five attempts, four waits, one failed
    # poll (tolerated). Poll B: 429, then a 200 that is not JSON: not retried, a second failed poll.
    # Poll C: cut mid-body, retried once: the wait goes on. (At least: on a busy machine an ordinary
    # answer may also miss the 0.3 s read timeout.)
    assert len(trigger_sleeps) >= 4 + 1 + 1
    SCENARIOS.append(
        MatrixRow(
            "trigger: 503 x3, drop, slow, 502, 429, malformed 200, truncate mid-wait",
            "LipsyncRequestTrigger.run",
            "completed event",
            len(made),
        )
    )


async def test_trigger_401_mid_wait_ends_with_error_without_a_tight_loop(
    simulator: Simulator, trigger_sleeps: RecordedSleeps
) -> None:
    job, task = await trigger_waiting(simulator, "running")

    simulator.state.add_fault(kind="status", status=401, path=f"/requests/{job.id}$", times=PERSISTENT)
    fault_from = len(polls(simulator, job.id))
    event = only_event(await task)

    assert event["status"] == "error"
    assert "401" in event["message"]
    assert job.id in event["message"]
    assert event["job_status"] == "running"  # the last status seen before the error
    assert API_KEY not in json.dumps(event)
    await asyncio.sleep(3 * POLL)  # a tight loop would keep polling after the event
    made = settled(lambda: polls(simulator, job.id), fault_from + 1)
    after = made[fault_from:]
    assert 1 <= len(after) <= 2, [(c.status, c.fault) for c in after]
    assert [c.status for c in after if c.fault] == [401]
    assert trigger_sleeps == []
    simulator.state.clear_faults()
    SCENARIOS.append(
        MatrixRow(
            "trigger: 401 mid-wait",
            "LipsyncRequestTrigger.run",
            "error event",
            len(made),
            f"{len(after)} after the fault",
        )
    )


async def test_trigger_restart_keeps_the_original_deadline(
    simulator: Simulator, trigger_sleeps: RecordedSleeps
) -> None:
    job = new_job(simulator)
    simulator.state.force_status(job.id, "running")
    # The first connection lookup in a process takes about a second on Airflow 3.0 (secrets backends and
    # Fernet load then): done before the clock starts, so the deadline is spent polling, not on that.
    ChamelaionHook.get_connection("chamelaion_default")
    wait_for = 1.0
    end_time = time.time() + wait_for
    first = LipsyncRequestTrigger(job.id, poll_interval=POLL, end_time=end_time)
    classpath, kwargs = first.serialize()
    task = asyncio.ensure_future(collect(first))
    await wait_until(lambda: len(polls(simulator, job.id)) >= 2)
    task.cancel()  # the triggerer goes away mid-wait
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(max(0.0, end_time - 0.3 - time.time()))  # ... and is back 0.3 s before the deadline
    restarted = time.time()

    stored = json.loads(json.dumps(kwargs))  # what the trigger table holds
    rebuilt = class_at(classpath)(**stored)
    assert isinstance(rebuilt, LipsyncRequestTrigger)
    assert rebuilt.end_time == end_time
    assert rebuilt.serialize() == (classpath, kwargs)
    event = only_event(await collect(rebuilt))
    ended = time.time()

    assert event["status"] == "timeout"
    assert event["job_status"] == "running"
    # Ended at the original deadline (0.3 s after the restart), not a full wait after the restart.
    assert ended >= end_time
    assert ended - restarted < wait_for - 0.2, (ended - end_time, ended - restarted)
    SCENARIOS.append(
        MatrixRow(
            "trigger: restart mid-wait (serialize, rebuild, run)",
            "LipsyncRequestTrigger.run",
            "timeout event at the original end_time",
            len(settled(lambda: polls(simulator, job.id), 1)),
        )
    )

    # A rebuilt trigger whose job finishes meanwhile completes normally.
    simulator.state.force_status(job.id, "completed")
    again = class_at(classpath)(**{**stored, "end_time": time.time() + 30})
    assert only_event(await collect(again))["status"] == "completed"


async def test_trigger_deadline_gives_a_timeout_event(
    simulator: Simulator, trigger_sleeps: RecordedSleeps
) -> None:
    job = new_job(simulator)
    simulator.state.force_status(job.id, "queued")
    end_time = time.time() + 0.4
    event = only_event(await collect(LipsyncRequestTrigger(job.id, poll_interval=POLL, end_time=end_time)))

    assert event["status"] == "timeout"
    assert event["request_id"] == job.id
    assert event["job_status"] == "queued"
    assert "did not finish" in event["message"]
    assert time.time() >= end_time
    made = settled(lambda: polls(simulator, job.id), 2)
    SCENARIOS.append(
        MatrixRow("trigger: deadline passes", "LipsyncRequestTrigger.run", "timeout event", len(made))
    )


async def test_trigger_polls_through_unknown_statuses(
    simulator: Simulator, trigger_sleeps: RecordedSleeps
) -> None:
    job, task = await trigger_waiting(simulator, "processing", polled=3)
    assert not task.done()
    simulator.state.force_status(job.id, "rendering")
    seen = len(polls(simulator, job.id))
    await wait_until(lambda: len(polls(simulator, job.id)) >= seen + 3)
    assert not task.done()
    simulator.state.force_status(job.id, "completed")

    event = only_event(await task)

    assert event["status"] == "completed"
    assert event["job_status"] == "completed"
    made = settled(lambda: polls(simulator, job.id), seen + 4)
    assert all(c.status == 200 for c in made)
    SCENARIOS.append(
        MatrixRow(
            "trigger: statuses processing, rendering, then completed",
            "LipsyncRequestTrigger.run",
            "completed event",
            len(made),
        )
    )


# -- downloads --------------------------------------------------------------------------------------------


def test_download_cut_mid_body_once_is_retried_to_a_complete_file(
    simulator: Simulator, sleeps: RecordedSleeps, tmp_path: Path
) -> None:
    state = simulator.state
    hook = make_hook(sleeps)
    job = new_job(simulator)
    state.add_fault(kind="truncate", path="/outputs/", cut_at=OUTPUT_SIZE // 2, times=1)

    written = hook.download_output(job.id, tmp_path / "episode.mp4")

    assert written == tmp_path / "episode.mp4"
    assert written.read_bytes() == expected_output(job.id)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episode.mp4"]
    outputs = settled(lambda: state.calls_to("GET", "^/outputs/"), 2)
    assert [c.fault for c in outputs] == ["truncate", None]
    assert len(state.calls_to("GET", "/requests/")) == 1
    assert len(sleeps) == 1
    SCENARIOS.append(
        MatrixRow("download: connection cut mid-body, once", "download_output", "ok, complete file", 3)
    )


def test_download_cut_every_time_fails_cleanly_and_leaves_nothing(
    simulator: Simulator, sleeps: RecordedSleeps, tmp_path: Path
) -> None:
    state = simulator.state
    hook = make_hook(sleeps)
    job = new_job(simulator)
    state.add_fault(kind="truncate", path="/outputs/", cut_at=OUTPUT_SIZE // 2, times=PERSISTENT)
    folder = tmp_path / "outputs"
    folder.mkdir()

    with pytest.raises(ChamelaionTransportError) as info:
        hook.download_output(job.id, folder / "episode.mp4")

    assert info.value.method == "GET"
    assert info.value.path == f"/outputs/{job.id}.mp4"  # no query string: the signature stays out
    assert "sig=" not in str(info.value)
    assert list(folder.iterdir()) == []  # neither the file nor a temporary/partial one
    outputs = settled(lambda: state.calls_to("GET", "^/outputs/"), MAX_ATTEMPTS)
    assert len(outputs) == MAX_ATTEMPTS
    assert len(sleeps) == MAX_ATTEMPTS - 1
    state.clear_faults()
    SCENARIOS.append(
        MatrixRow(
            "download: connection cut mid-body, every time",
            "download_output",
            "TransportError, folder left empty",
            1 + MAX_ATTEMPTS,
        )
    )


def test_download_expired_output_url_is_refreshed_once(
    simulator: Simulator, sleeps: RecordedSleeps, tmp_path: Path
) -> None:
    state = simulator.state
    hook = make_hook(sleeps)
    job = new_job(simulator, reference_id="expiring")
    state.add_fault(
        kind="status", status=403, body='{"message": "output URL expired"}', path="/outputs/", times=1
    )

    written = hook.download_output(job.id, tmp_path)

    assert written == tmp_path / f"{job.id}.mp4"
    assert written.read_bytes() == expected_output(job.id)
    assert len(settled(lambda: state.calls_to("GET", f"/requests/{job.id}$"), 2)) == 2
    assert [c.status for c in state.calls_to("GET", "^/outputs/")] == [403, 200]
    assert sleeps == []
    SCENARIOS.append(
        MatrixRow(
            "download: output URL expired (403 once), from an id",
            "download_output",
            "ok",
            4,
            "2 GETs of the request",
        )
    )


def test_download_really_expired_url_from_the_simulator(
    simulator: Simulator, sleeps: RecordedSleeps, tmp_path: Path
) -> None:
    """Not a scripted fault: the simulator's own signed URL is past its expiry; the refresh gets a new one."""
    state = simulator.state
    hook = make_hook(sleeps)
    job = new_job(simulator)
    simulator.config.output_url_ttl = -10.0
    stale = hook.get_request(job.id)
    simulator.config.output_url_ttl = 3600.0

    written = hook.download_output(stale, tmp_path / "fresh.mp4")

    assert written.read_bytes() == expected_output(job.id)
    assert [c.status for c in settled(lambda: state.calls_to("GET", "^/outputs/"), 2)] == [403, 200]
    assert len(state.calls_to("GET", f"/requests/{job.id}$")) == 2  # the stale read, then one refresh
