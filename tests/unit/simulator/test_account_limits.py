"""The simulator's account limits: concurrency quota, POST rate limit, pre-loaded history, page size.

They make batch tests realistic: a catalogue backfill meets all four on a real account.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests

from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig
from airflow_provider_chamelaion.simulator.__main__ import parse_args
from tests.harness.simulator import (
    KEY,
    TIMEOUT,
    VALID_BODY,
    api,
    fake_clock,
    get_request,
    list_requests,
    new_job,
    parse_time,
    post_generate,
)


def statuses(sim: Simulator, job_ids: list[str]) -> list[str]:
    return [get_request(sim, job_id).json()["status"] for job_id in job_ids]


def test_concurrency_limit_keeps_jobs_queued_until_a_slot_frees(
    make_simulator: Callable[..., Simulator],
) -> None:
    sim = make_simulator(phases=(("queued", 1.0), ("running", 10.0)), max_concurrent_jobs=2)
    clock = fake_clock(sim)
    jobs = [new_job(sim) for _ in range(5)]

    assert statuses(sim, jobs) == ["queued"] * 5
    clock.advance(1.0)  # queue time over: two slots, oldest first
    assert statuses(sim, jobs) == ["running", "running", "queued", "queued", "queued"]
    clock.advance(9.9)
    assert statuses(sim, jobs) == ["running", "running", "queued", "queued", "queued"]
    clock.advance(0.1)  # the first two finish at 11 s and hand their slots on
    assert statuses(sim, jobs) == ["completed", "completed", "running", "running", "queued"]
    clock.advance(10.0)
    assert statuses(sim, jobs) == ["completed"] * 4 + ["running"]
    clock.advance(10.0)
    assert statuses(sim, jobs) == ["completed"] * 5


def test_concurrency_limit_times_are_those_of_the_slot(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(phases=(("queued", 1.0), ("running", 10.0)), max_concurrent_jobs=1)
    clock = fake_clock(sim)
    first, second = new_job(sim), new_job(sim)
    clock.advance(30.0)

    done = get_request(sim, second).json()
    assert get_request(sim, first).json()["status"] == "completed"
    assert done["status"] == "completed"
    created = parse_time(done["created_at"])
    assert (parse_time(done["started_at"]) - created).total_seconds() == pytest.approx(11.0)
    assert (parse_time(done["finished_at"]) - created).total_seconds() == pytest.approx(21.0)


def test_post_rate_limit_answers_429_with_retry_after_and_creates_nothing(
    make_simulator: Callable[..., Simulator],
) -> None:
    sim = make_simulator(post_rate_limit=3)
    clock = fake_clock(sim)

    accepted = [post_generate(sim).status_code for _ in range(3)]
    refused = post_generate(sim)

    assert accepted == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert "3 requests per second" in refused.json()["message"]
    assert len(sim.state.jobs) == 3
    assert requests.get(api(sim, "/requests"), headers=KEY, timeout=TIMEOUT).status_code == 200, (
        "GETs are not rate limited"
    )
    clock.advance(1.0)
    assert post_generate(sim).status_code == 200
    assert len(sim.state.jobs) == 4


def test_post_rate_limit_applies_to_uploads(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(post_rate_limit=1)
    fake_clock(sim)
    files = {"video": ("v.mp4", b"v" * 10, "video/mp4"), "audio": ("a.wav", b"a" * 10, "audio/wav")}
    url = api(sim, "/generate-with-media")

    codes = [requests.post(url, files=files, headers=KEY, timeout=TIMEOUT).status_code for _ in range(2)]

    assert codes == [200, 429]
    assert len(sim.state.uploads) == 1


def test_history_is_preloaded_finished_and_listed_oldest_last(
    make_simulator: Callable[..., Simulator],
) -> None:
    sim = make_simulator(history_size=250)
    new_id = post_generate(sim, {**VALID_BODY, "reference_id": "fresh"}).json()["request_id"]

    first = list_requests(sim, limit=100).json()
    last = list_requests(sim, limit=100, offset=200).json()

    assert first["pagination"] == {"limit": 100, "offset": 0, "total": 251}
    assert first["data"][0]["id"] == new_id
    assert first["data"][1]["reference_id"] == "history-249"
    assert [item["reference_id"] for item in last["data"][-2:]] == ["history-1", "history-0"]
    assert {item["status"] for item in first["data"][1:] + last["data"]} == {"completed"}
    assert get_request(sim, "history-7").json()["status"] == "completed"


def test_history_survives_a_reset_with_the_same_config(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(history_size=10)
    new_job(sim)
    sim.reset(sim.config)
    assert list_requests(sim).json()["pagination"]["total"] == 10


def test_history_holds_no_slot_of_the_concurrency_limit(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(history_size=5, max_concurrent_jobs=1, phases=(("queued", 1.0), ("running", 1.0)))
    clock = fake_clock(sim)
    job = new_job(sim)
    clock.advance(1.0)
    assert statuses(sim, [job]) == ["running"]


@pytest.mark.parametrize(
    "overrides",
    [{"max_page_size": 0}, {"max_concurrent_jobs": 0}, {"post_rate_limit": 0}, {"history_size": -1}],
)
def test_bad_limits_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(overrides))):
        SimulatorConfig(**overrides)


def test_cli_takes_the_account_limits() -> None:
    args = parse_args(
        [
            "--max-page-size",
            "50",
            "--max-concurrent-jobs",
            "8",
            "--post-rate-limit",
            "20",
            "--history-size",
            "20000",
        ]
    )
    assert (args.max_page_size, args.max_concurrent_jobs, args.post_rate_limit, args.history_size) == (
        50,
        8,
        20.0,
        20000,
    )
    defaults = parse_args([])
    assert (defaults.max_page_size, defaults.max_concurrent_jobs, defaults.post_rate_limit) == (
        100,
        None,
        None,
    )
