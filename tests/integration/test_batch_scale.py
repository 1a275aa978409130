"""Batches at scale against the simulator: 10,000 items end to end, a worker killed mid-submission,
a manifest on object storage. Exact job counts and API call counts, from the simulator's call log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_chamelaion.batch.manifest import read_manifest
from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig
from tests.harness.batch import items, make_batch, run_batch
from tests.harness.constants import API_KEY, ROOT
from tests.harness.context import make_context
from tests.harness.simulator import idle

CHILD = Path(__file__).resolve().parent / "children" / "batch_child.py"


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    # "Fast settings": jobs run 2 s, 500 at a time (so the batch is still working after the last POST
    # and the trigger polls a draining backlog); the account already holds 20,000 requests, 100 a page.
    return SimulatorConfig(
        api_key=API_KEY,
        phases=(("queued", 0.5), ("running", 2.0)),
        max_concurrent_jobs=500,
        history_size=20_000,
        max_page_size=100,
    )


def calls_by_kind(simulator: Simulator, since: int = 0) -> Counter[str]:
    kinds: Counter[str] = Counter()
    for call in idle(simulator).state.calls[since:]:
        if call.method == "POST":
            kinds["post"] += 1
        elif call.path.endswith("/requests"):
            kinds["list"] += 1
        else:
            kinds["get"] += 1
    return kinds


def test_a_10000_item_batch_end_to_end(simulator: Simulator, tmp_path: Path) -> None:
    catalogue = items(10_000)
    started = time.monotonic()

    operator = make_batch(tmp_path, catalogue, submit_concurrency=16, poll_interval=1.0)
    run = run_batch(operator, make_context())

    elapsed = time.monotonic() - started
    assert run.error is None, run.error
    assert run.summary is not None
    assert (run.summary["submitted"], run.summary["completed"], run.summary["failed"]) == (10_000, 10_000, 0)
    assert len(simulator.state.jobs) == 30_000  # the history and exactly one job per item
    assert len({job.reference_id for job in simulator.state.jobs.values()}) == 30_000
    assert len(run.triggers) == 1
    kinds = calls_by_kind(simulator)
    assert kinds["post"] == 10_000
    # Reconcile: 20,000 requests at 100 a page, nothing found: exactly 200 pages (budget: 250). While
    # submitting, the newest page is read before each chunk of 16 POSTs (other submitters' jobs).
    assert operator.submit_report is not None
    watch_calls = operator.submit_report.listing_calls
    assert watch_calls <= 10_000 // 16 + 2
    poll_calls = kinds["list"] + kinds["get"] - 200 - watch_calls
    assert poll_calls == sum(calls for _, calls in run.cycles)
    # Every poll cycle costs at least 10x fewer calls than one GET per pending job.
    assert all(calls * 10 <= max(pending, 10) for pending, calls in run.cycles), run.cycles
    report = {
        "seconds": round(elapsed, 1),
        "posts": kinds["post"],
        "list_pages": kinds["list"],
        "status_gets": kinds["get"],
        "poll_cycles": [f"{pending} pending: {calls} calls" for pending, calls in run.cycles],
    }
    print(f"\n10,000-item batch: {json.dumps(report)}")

    # A clear of the finished task: its own manifest says every row completed, so nothing is asked.
    calls_before = len(simulator.state.calls)
    cleared = run_batch(make_batch(tmp_path, catalogue), make_context(try_number=2))

    assert cleared.error is None, cleared.error
    assert cleared.summary is not None
    assert (cleared.summary["completed"], cleared.summary["submitted"]) == (10_000, 10_000)
    assert cleared.triggers == []
    assert calls_by_kind(simulator, calls_before) == Counter()

    # A new run (its own manifest path): the 10,000 items are the newest 10,000 requests, so 100 pages
    # answer for all (goal: at most N / 40).
    calls_before = len(simulator.state.calls)
    rerun = run_batch(make_batch(tmp_path / "run-2", catalogue), make_context(run_id="manual__2"))

    assert rerun.error is None, rerun.error
    assert rerun.summary is not None
    assert (rerun.summary["reused"], rerun.summary["submitted"]) == (10_000, 0)
    assert rerun.triggers == []
    assert calls_by_kind(simulator, calls_before) == Counter({"list": 100})


def test_a_worker_killed_mid_submission_is_retried_without_paying_twice(
    simulator: Simulator, tmp_path: Path
) -> None:
    catalogue = tmp_path / "catalogue.jsonl"
    catalogue.write_text("".join(json.dumps(item) + "\n" for item in items(400)))
    manifest = tmp_path / "manifest.jsonl"
    env = {
        **os.environ,
        "AIRFLOW_CONN_CHAMELAION_DEFAULT": simulator.connection_json(),
        "PYTHONPATH": str(ROOT),
    }
    child = subprocess.Popen([sys.executable, str(CHILD), str(catalogue), str(manifest)], env=env)
    try:
        deadline = time.monotonic() + 120
        while len(simulator.state.jobs) < 20_000 + 100:
            assert child.poll() is None, "the worker finished before it could be killed"
            assert time.monotonic() < deadline, "the worker never got going"
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    created_before = len(idle(simulator).state.jobs) - 20_000
    assert 100 <= created_before < 400
    plan = read_manifest(manifest)  # written before the first POST: the plan, nothing recorded yet
    assert {row.status for row in plan} == {"not_submitted"}

    retry = run_batch(make_batch(tmp_path, str(catalogue)), make_context())

    assert retry.error is None, retry.error
    assert retry.summary is not None
    assert (retry.summary["reused"], retry.summary["submitted"]) == (created_before, 400 - created_before)
    references = Counter(job.reference_id for job in idle(simulator).state.jobs.values())
    assert {ref: count for ref, count in references.items() if not str(ref).startswith("history-")} == {
        f"title-{n}-fr": 1 for n in range(400)
    }


def test_manifest_and_catalogue_on_object_storage(simulator: Simulator, tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    (bucket / "catalogue.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items(30)))
    operator = make_batch(tmp_path, f"file://{bucket}/catalogue.jsonl", poll_interval=0.5)
    operator.manifest_path = f"file://{bucket}/runs/manifest.jsonl"

    run = run_batch(operator, make_context())

    assert run.error is None, run.error
    assert run.summary is not None
    assert run.summary["manifest_path"].startswith("file://")
    rows: list[dict[str, Any]] = [
        json.loads(line) for line in (bucket / "runs" / "manifest.jsonl").read_text().splitlines()[1:]
    ]
    assert [row["reference_id"] for row in rows] == [f"title-{n}-fr" for n in range(30)]
    assert {row["status"] for row in rows} == {"completed"}
