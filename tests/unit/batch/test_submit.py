"""Batch submission machinery: one pace for every submitter, learned from 429s; the order of POSTs
beside another submitter."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from airflow_provider_chamelaion.batch.manifest import ManifestRow
from airflow_provider_chamelaion.batch.submit import SubmissionOrder, SubmitPacer


class FakeTime:
    """A clock the pacer's waits advance, and a log that keeps its lines."""

    def __init__(self) -> None:
        self.now = 0.0
        self.lines: list[str] = []

    def clock(self) -> float:
        return self.now

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        self.now += seconds
        return stop.is_set()

    def warning(self, message: str, *args: Any) -> None:
        self.lines.append(message % args)


def pacer(rate: float | None, fake: FakeTime) -> SubmitPacer:
    return SubmitPacer(rate, fake, clock=fake.clock, wait=fake.wait)


def test_turns_are_spaced_at_the_rate() -> None:
    fake, stop = FakeTime(), threading.Event()
    pace = pacer(50.0, fake)

    times = []
    for _ in range(5):
        assert pace.acquire(stop)
        times.append(round(fake.now, 6))

    assert times == [0.0, 0.02, 0.04, 0.06, 0.08]


def test_a_429_pauses_every_submitter_and_learns_a_pace_under_what_was_accepted() -> None:
    fake, stop = FakeTime(), threading.Event()
    pace = pacer(None, fake)
    for _ in range(100):  # unpaced: a burst the server accepts within its second
        assert pace.acquire(stop)
        pace.accepted()
        fake.now += 0.001

    pace.rate_limited(retry_after=1.0)
    pace.rate_limited(retry_after=1.0)  # a second submitter's 429 in the same back-off

    assert pace.rate == pytest.approx(95.0)  # 0.95 of the 100 accepted in the second before
    before = fake.now
    assert pace.acquire(stop)
    assert fake.now == pytest.approx(before + 1.0), "waited the Retry-After"
    assert pace.acquire(stop)
    assert fake.now == pytest.approx(before + 1.0 + 1 / 95)
    assert fake.lines == [
        "The API refused 2 POST(s) with 429 (rate limit); every submitter waited as asked, then went on "
        "at 95.0 POSTs/s"
    ], "one line per back-off period, with the count"


def test_a_stop_while_waiting_sends_nothing() -> None:
    fake, stop = FakeTime(), threading.Event()
    pace = pacer(1.0, fake)
    assert pace.acquire(stop)
    stop.set()

    assert not pace.acquire(stop)


def rows(count: int) -> tuple[list[ManifestRow], dict[str, int]]:
    made = [ManifestRow(f"item-{n}") for n in range(count)]
    return made, {row.reference_id: n for n, row in enumerate(made)}


def refs(taken: list[ManifestRow]) -> list[int]:
    return [int(row.reference_id.split("-")[1]) for row in taken]


def test_forward_order_takes_chunks_and_skips_what_another_submitter_made() -> None:
    made, positions = rows(10)
    order = SubmissionOrder(made, positions, chunk=3)

    assert refs(order.take()) == [0, 1, 2]
    assert order.adopt("item-3")
    assert not order.adopt("item-0"), "already taken"
    assert refs(order.take()) == [4, 5, 6]
    assert order.remaining == 3


def test_a_yielding_batch_starts_at_the_far_end_and_keeps_its_margin() -> None:
    made, positions = rows(40)
    # Another submitter has reached item 5: the margin is 4 chunks of 2 = 8 positions.
    order = SubmissionOrder(made, positions, chunk=2, yielding=True, foreign=[5])

    taken = []
    while chunk := order.take():
        taken += refs(chunk)

    assert taken == list(range(39, 13, -1)), "down to 14: 14 - 5 > 8"
    order.foreign_job("item-20")  # the other submitter moved on
    assert order.take() == []
    order.stop_yielding()  # it went quiet: the rest is this batch's
    assert refs(order.take()) == [13, 12]


def test_turning_back_midway_reverses_what_is_left() -> None:
    made, positions = rows(40)
    order = SubmissionOrder(made, positions, chunk=4)
    assert refs(order.take()) == [0, 1, 2, 3]
    order.foreign_job("item-2")  # the same item paid twice: the other submitter is here too

    order.turn_back()

    assert refs(order.take()) == [39, 38, 37, 36]
    while order.take():
        pass
    assert order.remaining == 15, "items 4-18 lie within 16 positions of item 2: left to the other"


def test_a_pace_learned_while_sharing_the_limit_goes_back_up_when_the_api_refuses_nothing() -> None:
    fake, stop = FakeTime(), threading.Event()
    pace = pacer(None, fake)
    for _ in range(100):
        assert pace.acquire(stop)
        pace.accepted()
        fake.now += 0.001
    pace.rate_limited(retry_after=1.0)  # alone: 0.95 of 100 a second
    fake.now += 5.0
    pace.accepted()
    pace.accepted()
    pace.rate_limited(retry_after=1.0)  # another batch took the rest of this second
    assert pace.rate == pytest.approx(1.9)

    rates = []
    for _ in range(6):
        fake.now += 5.0
        assert pace.acquire(stop)
        rates.append(round(pace.rate or 0, 2))

    assert rates == [2.85, 4.27, 6.41, 9.62, 14.43, 21.64]
    for _ in range(10):
        fake.now += 5.0
        assert pace.acquire(stop)
    assert pace.rate == pytest.approx(95.0), "never above the best pace learned"
