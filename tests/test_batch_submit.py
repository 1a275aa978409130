"""Batch submission machinery: the one back-off every submitter of a batch shares."""

from __future__ import annotations

import threading

from airflow_provider_chamelaion.batch_submit import SharedBackoff


def test_shared_backoff_holds_every_thread_until_the_latest_pause_ends() -> None:
    now = [0.0]
    slept: list[tuple[str, float]] = []

    def sleep(seconds: float) -> None:
        slept.append((threading.current_thread().name, seconds))
        now[0] += seconds

    gate = SharedBackoff(sleep=sleep, clock=lambda: now[0])
    gate.wait()
    assert slept == [], "no pause, no wait"

    gate.pause(2.0)  # a 429 with Retry-After: 2 seen by one submitter
    assert now[0] == 2.0
    gate.pause(0.5)  # a shorter one later does not shorten anything; it waits its own
    assert now[0] == 2.5
    now[0] = 10.0
    gate.pause(3.0)
    other = threading.Thread(target=gate.wait, name="other-submitter")
    now[0] = 11.0  # the other submitter arrives a second into the pause: waits the remaining 2 s
    other.start()
    other.join()
    assert ("other-submitter", 2.0) in slept
