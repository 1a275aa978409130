"""A batch's submissions at the account's limits, and what its re-runs cost.

``python -m benchmarks submit``. Each scenario runs in a fresh interpreter (``--child``) with the simulator
in that process, so the simulator's call log gives exact counts and arrival times:

* **rate limit**: 10,000 items against an account that accepts 100 POSTs a second, 2% of POST answers
  lost (the job is created, the connection drops). The account's floor is 100 s. Measured over the
  submit phase (first POST to last accepted POST): jobs a second, the share of POSTs answered 429, the
  WARNING lines in the task log, and jobs per ``reference_id``.
* **no limit**: the same 10,000 items, no limit and no lost answers: what the submitters do on their own.
* **re-runs** of the finished 10,000-item batch on an account holding 20,000 other requests, 120 of the
  catalogue's items having older jobs scattered among them: a clear of the task (its own manifest), and
  a new run (a new manifest path, so the listing is read).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Goal, Section, child_env, emit, loadavg, log, run_child, table

ITEMS = 10_000
RATE = 100
LOST = 0.02
HISTORY = 20_000
BURIED = 120


def _items(count: int) -> list[dict[str, Any]]:
    return [
        {
            "video_url": f"https://cdn.example.com/title-{n}.mp4",
            "audio_url": f"https://cdn.example.com/title-{n}-fr.wav",
            "reference_id": f"title-{n}-fr",
        }
        for n in range(count)
    ]


class _TI:
    """The parts of a task instance the batch operator reads."""

    def __init__(self, run_id: str, try_number: int = 1) -> None:
        self.dag_id, self.task_id, self.run_id = "bench_submit", "backfill", run_id
        self.map_index, self.try_number = -1, try_number

    def xcom_push(self, key: str, value: Any) -> None:
        pass


class _WarningCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _child(scenario: str) -> None:
    """Run one scenario and print its report."""
    import structlog

    from airflow_provider_chamelaion.operators.batch import LipsyncBatchGenerateOperator
    from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig

    limited = scenario == "limit"
    config = SimulatorConfig(
        api_key="bench-key",
        phases=(("queued", 0.5), ("running", 0.5)),
        post_rate_limit=RATE if limited else None,
        lost_answer_rate=LOST if limited else 0.0,
        history_size=HISTORY if scenario == "reruns" else 0,
        seed=7,
    )
    work = Path(tempfile.mkdtemp(prefix="bench-submit-"))
    with Simulator(config) as sim:
        os.environ["AIRFLOW_CONN_CHAMELAION_DEFAULT"] = sim.connection_json()
        if scenario == "reruns":
            for n, position in enumerate(random.Random(7).sample(range(HISTORY), BURIED)):
                sim.state.bury(f"title-{n * (ITEMS // BURIED)}-fr", position)

        def batch(run_id: str, try_number: int = 1) -> tuple[dict[str, Any], float, int, list[str]]:
            operator = LipsyncBatchGenerateOperator(
                task_id="backfill",
                catalogue=_items(ITEMS),
                manifest_path=str(work / run_id / "manifest.jsonl"),
                wait_for_completion=False,
            )
            counter = _WarningCounter()
            logging.getLogger().addHandler(counter)
            calls_before = len(sim.state.calls)
            started = time.monotonic()
            with structlog.testing.capture_logs() as entries:
                context: Any = {"ti": _TI(run_id, try_number)}
                summary = operator.execute(context)
            seconds = time.monotonic() - started
            logging.getLogger().removeHandler(counter)
            warnings = counter.lines + [
                str(entry["event"]) for entry in entries if entry.get("log_level") in ("warning", "error")
            ]
            return summary, seconds, len(sim.state.calls) - calls_before, warnings

        summary, seconds, calls, warnings = batch("first")
        sim.state.wait_idle()
        posts = sim.state.calls_to("POST")
        accepted = [call for call in posts if call.status == 200 or call.fault == "drop_after"]
        report: dict[str, Any] = {
            "scenario": scenario,
            "seconds": seconds,
            "summary": summary,
            "posts": len(posts),
            "refused": sum(call.status == 429 for call in posts),
            "lost": sum(call.fault == "drop_after" for call in posts),
            "jobs": sum(1 for job in sim.state.jobs.values() if str(job.reference_id).startswith("title-")),
            "paid_twice": _paid_twice(sim),
            "submit_seconds": (accepted[-1].at - posts[0].at) if accepted else 0.0,
            "calls": calls,
            "warnings": len(warnings),
            "warning_samples": sorted(set(warnings))[:6],
        }
        if scenario == "reruns":
            # A clear of the finished task: its own manifest. A new run: a new manifest, the listing read.
            _, cleared_seconds, cleared_calls, _ = batch("first", try_number=2)
            rerun, rerun_seconds, rerun_calls, _ = batch("second")
            report.update(
                cleared_calls=cleared_calls,
                cleared_seconds=cleared_seconds,
                rerun_calls=rerun_calls,
                rerun_seconds=rerun_seconds,
                rerun_reused=rerun["reused"],
                jobs_after=sum(
                    1 for job in sim.state.jobs.values() if str(job.reference_id).startswith("title-")
                ),
            )
    emit(report)


def _paid_twice(sim: Any) -> int:
    counts: dict[str, int] = {}
    for job in sim.state.jobs.values():
        if str(job.reference_id).startswith("title-"):
            counts[str(job.reference_id)] = counts.get(str(job.reference_id), 0) + 1
    return sum(count - 1 for count in counts.values() if count > 1)


def run() -> Section:
    section = Section("Batch submissions at the account's limits")
    started = time.monotonic()
    load_before = loadavg()
    reports = {}
    for scenario in ("limit", "nolimit", "reruns"):
        log(f"submit: {scenario}")
        reports[scenario] = run_child("benchmarks.submit", [scenario], env=child_env(), timeout=1800)
    limit, free, reruns = reports["limit"], reports["nolimit"], reports["reruns"]
    rate = limit["jobs"] / limit["submit_seconds"]
    refused_share = limit["refused"] / limit["posts"]
    section.lines += [
        f"{ITEMS:,} catalogue items, `submit_concurrency` 8 (the "
        "default), `submit_rate` unset (learned from 429s), the simulator in the measuring process. Load "
        f"average before / after: {load_before} / {loadavg()}.",
        "",
        *table(
            [
                "scenario",
                "jobs",
                "POSTs",
                "429s",
                "lost answers",
                "paid twice",
                "submit phase s",
                "jobs/s",
                "WARNING lines",
            ],
            [
                [
                    f"{RATE} POSTs/s allowed, {LOST:.0%} answers lost",
                    limit["jobs"],
                    limit["posts"],
                    f"{limit['refused']} ({refused_share:.2%})",
                    limit["lost"],
                    limit["paid_twice"],
                    f"{limit['submit_seconds']:.1f}",
                    f"{rate:.1f}",
                    limit["warnings"],
                ],
                [
                    "no limit, no lost answers",
                    free["jobs"],
                    free["posts"],
                    free["refused"],
                    free["lost"],
                    free["paid_twice"],
                    f"{free['submit_seconds']:.1f}",
                    f"{free['jobs'] / max(free['submit_seconds'], 1e-9):.0f}",
                    free["warnings"],
                ],
            ],
        ),
        "",
        "WARNING lines of the rate-limited run (distinct texts): "
        + "; ".join(f"`{line[:160]}`" for line in limit["warning_samples"]),
        "",
        f"Re-runs of the finished batch, on an account with {HISTORY:,} other requests and older jobs of "
        f"{BURIED} of its items scattered among them: a clear of the task (it reads its own manifest) "
        f"**{reruns['cleared_calls']} calls** in {reruns['cleared_seconds']:.2f} s; a new run (new "
        f"manifest path) **{reruns['rerun_calls']} calls** in {reruns['rerun_seconds']:.1f} s, reusing "
        f"{reruns['rerun_reused']:,} jobs; jobs on the account for the catalogue before / after: "
        f"{reruns['jobs']:,} / {reruns['jobs_after']:,} (the {BURIED} older ones included).",
    ]
    section.goals += [
        Goal(
            "batch submit rate vs the account's limit",
            ">= 90% of 100/s",
            f"{rate:.1f}/s ({rate / RATE:.0%})",
            rate >= 0.9 * RATE,
        ),
        Goal("share of POSTs answered 429", "<= 5%", f"{refused_share:.2%}", refused_share <= 0.05),
        Goal("items paid twice", "0", str(limit["paid_twice"]), limit["paid_twice"] == 0),
        Goal(
            "re-run (clear) of a finished 10,000-item batch",
            f"<= {ITEMS // 100} calls",
            str(reruns["cleared_calls"]),
            reruns["cleared_calls"] <= ITEMS // 100,
        ),
    ]
    section.seconds = time.monotonic() - started
    return section


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("scenario", choices=("limit", "nolimit", "reruns"))
    args = parser.parse_args()
    if args.child:
        _child(args.scenario)
    else:
        print(json.dumps(run().markdown(), indent=1))
    sys.exit(0)


if __name__ == "__main__":
    main()
