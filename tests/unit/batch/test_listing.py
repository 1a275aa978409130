"""Reconciling many reference_ids with the listing: the cheapest walk, clamped pages, shifting offsets."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_chamelaion.batch.listing import ListingScan, find_jobs
from airflow_provider_chamelaion.client.models import RequestPage
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig
from tests.harness.constants import API_KEY


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    # Jobs finish at once (no phases), history as on a real account.
    return SimulatorConfig(api_key=API_KEY, phases=(), history_size=2000)


def new_jobs(simulator: Simulator, references: list[str]) -> dict[str, str]:
    return {
        ref: simulator.state.create_job(reference_id=ref, source="urls", inputs={}).id for ref in references
    }


def list_calls(simulator: Simulator) -> int:
    return len(simulator.state.calls_to("GET", r"/requests$"))


def test_find_jobs_walks_the_listing_once_when_pages_are_cheaper(
    simulator: Simulator, sim_hook: ChamelaionHook
) -> None:
    ids = new_jobs(simulator, [f"item-{n}" for n in range(500)])
    wanted = [f"item-{n}" for n in range(1000)]  # half exist, half do not

    result = find_jobs(sim_hook, wanted)

    assert {ref: request.id for ref, request in result.found.items()} == ids
    # 2,500 requests on the account, 100 a page: 25 pages, and not one look-up per item.
    assert (result.list_calls, result.lookup_calls) == (25, 0)
    assert list_calls(simulator) == 25


def test_find_jobs_stops_as_soon_as_everything_is_found(
    simulator: Simulator, sim_hook: ChamelaionHook
) -> None:
    new_jobs(simulator, [f"item-{n}" for n in range(300)])  # the newest 300 of 2,300

    result = find_jobs(sim_hook, [f"item-{n}" for n in range(300)])

    assert len(result.found) == 300
    assert (result.list_calls, result.lookup_calls) == (3, 0)


def test_find_jobs_looks_up_a_few_items_one_by_one(simulator: Simulator, sim_hook: ChamelaionHook) -> None:
    ids = new_jobs(simulator, ["item-a"])
    result = find_jobs(sim_hook, ["item-a", "item-b", "history-5"])

    # Page 1 finds item-a, so page 2 is read too (wanted items sit together); it finds nothing, and 19
    # more pages would cost more than looking up the other two.
    assert (result.list_calls, result.lookup_calls) == (2, 2)
    assert result.found["item-a"].id == ids["item-a"]
    assert set(result.found) == {"item-a", "history-5"}


def test_find_jobs_follows_a_clamped_page_size(make_sim: Any, sim_hook: ChamelaionHook) -> None:
    simulator = make_sim(max_page_size=40, history_size=400)
    new_jobs(simulator, [f"item-{n}" for n in range(100)])

    result = find_jobs(sim_hook, [f"item-{n}" for n in range(200)], page_size=100)

    assert len(result.found) == 100
    assert result.list_calls == 13  # ceil(500 / 40): every page, none skipped, none fetched twice


def test_find_jobs_misses_nothing_when_jobs_are_created_between_pages(
    simulator: Simulator, sim_hook: ChamelaionHook, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = new_jobs(simulator, [f"item-{n}" for n in range(250)])
    original = ChamelaionHook.list_requests

    def busy_account(self: ChamelaionHook, **kwargs: Any) -> RequestPage:
        page = original(self, **kwargs)
        new_jobs(
            simulator, [f"other-{kwargs.get('offset')}-{n}" for n in range(30)]
        )  # others keep submitting
        return page

    monkeypatch.setattr(ChamelaionHook, "list_requests", busy_account)

    result = find_jobs(sim_hook, [f"item-{n}" for n in range(250)] + ["absent"])

    assert {ref: request.id for ref, request in result.found.items()} == ids
    # Each page after the first repeats the 30 jobs pushed down onto it (deduplicated), so 250 items
    # take 5 pages; then "absent" is missing and a look-up is cheaper than the 19 pages left.
    assert (result.list_calls, result.lookup_calls) == (5, 1)


def test_failed_jobs_are_never_reused_but_an_older_live_one_is(
    simulator: Simulator, sim_hook: ChamelaionHook
) -> None:
    older = new_jobs(simulator, ["item"])["item"]
    newer = new_jobs(simulator, ["item"])["item"]
    simulator.state.force_status(newer, "failed", "boom")

    result = find_jobs(sim_hook, ["item"] + [f"x-{n}" for n in range(30)])

    assert result.found["item"].id == older


def test_scan_plan_on_pages_as_data() -> None:
    scan = ListingScan(page_size=100)
    assert scan.next_offset(missing=0) is None
    assert scan.next_offset(missing=5) == 0
    scan.feed(RequestPage(data=[], total=0, limit=100))
    assert scan.exhausted
    assert scan.next_offset(missing=5) is None

    scan = ListingScan(page_size=100)
    scan.feed(RequestPage(data=_requests(50), total=1000, limit=50))  # clamped to 50
    assert scan.offset == 50
    # 950 left at 50 a page: 19 pages, cheaper than 20 look-ups, dearer than 18.
    assert scan.next_offset(missing=18) is None
    assert scan.next_offset(missing=19) == 50
    assert scan.next_offset(missing=20) == 50


def _requests(count: int) -> list[Any]:
    from airflow_provider_chamelaion.client.models import LipsyncRequest

    return [LipsyncRequest(id=f"id-{n}", status="completed") for n in range(count)]


@pytest.fixture
def make_sim(simulator: Simulator) -> Any:
    def make(**overrides: Any) -> Simulator:
        simulator.reset(SimulatorConfig(api_key=API_KEY, phases=(), **overrides))
        return simulator

    return make
