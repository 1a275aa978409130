"""1,000 ``LipsyncRequestTrigger`` waiting at once in one event loop vs the HTTP provider's
``HttpSensorTrigger`` polling the same simulator endpoint.

Each side runs in a fresh interpreter with its own simulator subprocess (jobs stay ``running``:
``--phases queued=1,running=3600``). The child runs 1,000 ``trigger.run()`` generators as tasks of one
default asyncio loop (what the triggerer uses), each started after a random delay within the first poll
interval (triggers defer at different moments; started in the same instant they would poll in lockstep
forever). After a warm-up, a measured window runs until a fixed number of polls (or a time limit):

* event-loop lag: a monitor task sleeps 5 ms in a loop and records how late it wakes up;
* CPU per poll: ``time.process_time()`` over the window divided by the polls in the window, counted
  in-process by wrapping the call each trigger makes per poll (``ChamelaionHook.aget_request``,
  ``HttpAsyncHook.run``) - the same thin wrapper on both sides;
* memory per waiting trigger: current RSS at the end of the window minus the RSS before the triggers
  were created, divided by their number.

The anchor polls ``GET /api/v1/lipsync/requests/<unknown id>`` with the key (``HttpSensorTrigger`` keeps
polling only while it gets a 404); ours polls ``GET /api/v1/lipsync/requests/<id>`` of running jobs.
Connections come from the environment (``AIRFLOW_CONN_CHAMELAION_DEFAULT``, ``AIRFLOW_CONN_HTTP_SIM``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import itertools
import json
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks.common import (
    WORK,
    Goal,
    Section,
    SimulatorProcess,
    child_env,
    current_rss_kib,
    emit,
    loadavg,
    log,
    run_child,
    table,
)
from benchmarks.loop import measure_window, profile_summary

TRIGGERS = 1000
POLL_INTERVAL = 1.0
WARMUP_SECONDS = 6.0
TARGET_POLLS = 20_000
MAX_WINDOW_SECONDS = 30.0
SURVIVOR_INTERVAL = POLL_INTERVAL
PROFILE_POLLS = 5_000
PROFILE_MAX_SECONDS = 12.0
LAG_GOAL_MS = 10.0
CPU_RATIO_GOAL = 0.3
#: The anchor's CPU per poll from the last run (the client micro-benchmark compares with it).
LAST_ANCHOR_MS_PER_POLL: float | None = None


def create_jobs(sim: SimulatorProcess, count: int) -> list[str]:
    return [sim.create_job() for _ in range(count)]


def run_side(mode: str, *, profile: bool = False, freeze: bool = False) -> dict[str, Any]:
    """One child run against its own simulator; ``mode`` is ``ours`` or ``anchor``.

    :param profile: run the measured window under cProfile (CPU-time timer).
    :param freeze: ``gc.freeze()`` once everything is imported, before the triggers start.
    """
    with SimulatorProcess(name=f"simulator-triggers-{mode}") as sim:
        ids_file = WORK / f"trigger-ids-{mode}.json"
        # The anchor keeps polling only while it gets a 404: unknown ids.
        count = 1 if mode.endswith("-survivors") else TRIGGERS
        ids = (
            create_jobs(sim, count) if mode.startswith("ours") else [str(uuid.uuid4()) for _ in range(count)]
        )
        ids_file.write_text(json.dumps(ids))
        http_conn = {
            "conn_type": "http",
            "host": "127.0.0.1",
            "port": sim.port,
            "schema": "http",
            "extra": {"x-api-key": sim.api_key},
        }
        env = child_env(
            AIRFLOW_CONN_CHAMELAION_DEFAULT=sim.connection_json(),
            AIRFLOW_CONN_HTTP_SIM=json.dumps(http_conn),
        )
        server_before = sim.cpu_seconds()
        args = [mode, str(ids_file), str(PROFILE_POLLS if profile else TARGET_POLLS)]
        args.append(str(PROFILE_MAX_SECONDS if profile else MAX_WINDOW_SECONDS))
        args += ["--profile"] if profile else []
        args += ["--freeze"] if freeze else []
        suffix = ("-profile" if profile else "") + ("-freeze" if freeze else "")
        try:
            report = run_child(
                "benchmarks.triggers",
                args,
                env=env,
                timeout=240,
                stderr_path=WORK / f"triggers-{mode}{suffix}.stderr",
            )
        finally:
            ids_file.unlink(missing_ok=True)
        report["server_cpu"] = sim.cpu_seconds() - server_before
    return report


def run() -> Section:
    started = time.monotonic()
    section = Section(
        f"{TRIGGERS:,} triggers waiting at once in one event loop (poll interval {POLL_INTERVAL:g} s)"
    )
    load = [loadavg()]
    results: dict[str, dict[str, Any]] = {}
    for name in ("anchor", "ours", "ours-frozen"):
        mode = name.split("-")[0]
        log(f"triggers: {name} ({TRIGGERS} triggers, until {TARGET_POLLS} polls or {MAX_WINDOW_SECONDS:g} s)")
        results[name] = run_side(mode, freeze=name.endswith("-frozen"))
        r = results[name]
        log(
            f"  {r['polls']} polls in {r['window_seconds']:.1f} s, {r['cpu_ms_per_poll']:.3f} ms CPU/poll, "
            f"worst lag {r['lag_worst_ms']:.1f} ms"
        )
    log("triggers: ours again under cProfile (where the time goes)")
    profiled = run_side("ours", profile=True)
    log("triggers: what one poll leaves alive across its sleep (one trigger of each kind)")
    survivors = {mode: run_side(f"{mode}-survivors") for mode in ("anchor", "ours")}
    load.append(loadavg())
    section.seconds = time.monotonic() - started

    ours, anchor, frozen = results["ours"], results["anchor"], results["ours-frozen"]
    global LAST_ANCHOR_MS_PER_POLL
    LAST_ANCHOR_MS_PER_POLL = float(anchor["cpu_ms_per_poll"])
    labels = {
        "anchor": "`HttpSensorTrigger` (anchor)",
        "ours": "`LipsyncRequestTrigger`",
        "ours-frozen": "`LipsyncRequestTrigger`, `gc.freeze()` after start-up (not a goal figure)",
    }
    rows = []
    for name in labels:
        r = results[name]
        rows.append(
            [
                labels[name],
                r["polls"],
                f"{r['window_seconds']:.1f}",
                f"{r['polls'] / r['window_seconds']:.0f}",
                f"**{r['cpu_ms_per_poll']:.3f}**",
                f"**{r['lag_worst_ms']:.1f}**",
                f"{r['lag_p99_ms']:.1f}",
                f"{r['lag_p50_ms']:.2f}",
                f"{r['ramp_lag_worst_ms']:.0f}",
                f"{r['gc_worst_pause_ms']:.1f} ({r['gc_gen2_collections']})",
                f"{r['gc_total_ms'] / 1000 / max(r['cpu_seconds'], 1e-9):.0%}",
                f"{r['gc_promoted'] / max(r['polls'], 1):.1f}",
                f"{r['kib_per_trigger']:.1f}",
                f"{r['server_cpu'] * 1000 / max(r['total_polls'], 1):.2f}",
                r["errors"],
            ]
        )
    ratio = ours["cpu_ms_per_poll"] / anchor["cpu_ms_per_poll"]
    section.lines += [
        f"{TRIGGERS:,} triggers in one default asyncio loop (as the triggerer runs them), starts spread over "
        f"the first {POLL_INTERVAL:g} s; {WARMUP_SECONDS:g} s warm-up, then a window of {TARGET_POLLS:,} polls "
        f"(or {MAX_WINDOW_SECONDS:g} s). Lag: a 5 ms sleep's overshoot, sampled throughout the window. "
        "Memory: current RSS at the end of the window minus RSS before the triggers were created. Logging "
        "goes through Airflow's structlog set-up to the child's stdout (a pipe the runner drains); log "
        f"lines per poll over the whole run: anchor {anchor['stdout_other_lines'] / anchor['total_polls']:.2f}, "
        f"ours {ours['stdout_other_lines'] / ours['total_polls']:.2f}. GC: the longest garbage "
        f"collection in the window (gen-2 collections counted). Load average (1 min) before / after: {' / '.join(load)}.",
        "",
        *table(
            [
                "trigger",
                "polls",
                "window s",
                "polls/s",
                "CPU ms/poll",
                "worst lag ms",
                "p99 lag ms",
                "median lag ms",
                "worst lag during start-up ms",
                "worst GC pause ms (gen-2 runs)",
                "GC time / CPU time",
                "objects promoted to gen 2 per poll",
                "KiB per waiting trigger",
                "server CPU ms/poll",
                "errors",
            ],
            rows,
        ),
        "",
        f"CPU per poll, ours / anchor: **{ratio:.2f}** (goal <= {CPU_RATIO_GOAL:.2f}). Event-loop lag "
        f"ours / anchor (worst): {ours['lag_worst_ms']:.1f} / {anchor['lag_worst_ms']:.1f} ms.",
        "",
        f"Objects tracked by the garbage collector once everything is imported: "
        f"{ours['gc_tracked_objects_at_start']:,} (anchor's process: {anchor['gc_tracked_objects_at_start']:,}). "
        "Every full (gen-2) collection walks all of them, and Airflow's triggerer does not `gc.freeze()` "
        "them. The third row freezes them after start-up: "
        f"{frozen['cpu_ms_per_poll']:.3f} ms/poll, worst lag {frozen['lag_worst_ms']:.1f} ms, worst GC pause "
        f"{frozen['gc_worst_pause_ms']:.1f} ms: the difference to the second row is the collector walking "
        "Airflow's own start-up objects, which no trigger code can avoid except by making less cyclic garbage.",
        "",
        "Why full collections run at all: CPython starts one when the objects promoted to the oldest "
        "generation since the last one exceed a quarter of the objects that survived it, and an object "
        "a poll leaves alive across the poll interval is promoted. Objects promoted per poll are in the "
        "table (counted at every generation-1 collection in the window; objects still in flight at that "
        "moment count too, so it grows with load). What one poll leaves alive across its sleep, one "
        "trigger alone, a full collection before each snapshot (per poll, named types, most first):",
        "",
        *[
            f"* {labels[mode]}: **{survivors[mode]['survivors_per_poll']:.0f}** objects: "
            + ", ".join(f"`{name}` {count:g}" for name, count in survivors[mode]["survivor_types"])
            for mode in ("anchor", "ours")
        ],
        "",
        "Where our CPU goes (cProfile of the loop, a separate shorter run; cProfile inflates pure-Python "
        f"code, so read the shares, not the absolute numbers; {profiled['polls']} polls, "
        f"{profiled['cpu_ms_per_poll']:.3f} ms/poll under the profiler):",
        "",
        *table(
            ["package", "own time share"],
            [[name, f"{share:.0%}"] for name, share in profiled["profile_groups"]],
        ),
        "",
        "Top functions by own time:",
        "",
        *table(
            ["function", "calls per poll", "own time share"],
            [[name, f"{calls:.1f}", f"{share:.1%}"] for name, calls, share in profiled["profile_functions"]],
        ),
        "",
    ]
    section.goals += [
        Goal(
            "worst event-loop lag, 1,000 waiting triggers",
            f"< {LAG_GOAL_MS:g} ms",
            f"{ours['lag_worst_ms']:.1f} ms (p99 {ours['lag_p99_ms']:.1f} ms)",
            ours["lag_worst_ms"] < LAG_GOAL_MS,
            f"{LAG_GOAL_MS - ours['lag_worst_ms']:+.1f} ms",
        ),
        Goal(
            "CPU time per poll vs HttpSensorTrigger",
            f"<= {CPU_RATIO_GOAL:g}x ({anchor['cpu_ms_per_poll'] * CPU_RATIO_GOAL:.3f} ms)",
            f"{ours['cpu_ms_per_poll']:.3f} ms vs {anchor['cpu_ms_per_poll']:.3f} ms = {ratio:.2f}",
            ratio <= CPU_RATIO_GOAL,
            f"{(anchor['cpu_ms_per_poll'] * CPU_RATIO_GOAL - ours['cpu_ms_per_poll']):+.3f} ms/poll",
        ),
        Goal(
            "memory per waiting trigger",
            "reported",
            f"{ours['kib_per_trigger']:.1f} KiB (anchor {anchor['kib_per_trigger']:.1f} KiB)",
            None,
        ),
    ]
    return section


# -- the child ------------------------------------------------------------------------------------


class PollCounter:
    """Counts calls of an async method on a class (one call = one poll), with the thinnest wrapper."""

    def __init__(self, owner: type, name: str) -> None:
        self.count = 0
        self.name = f"{owner.__qualname__}.{name}"
        original: Callable[..., Awaitable[Any]] = getattr(owner, name)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await original(*args, **kwargs)

        setattr(owner, name, counted)


def _make_ours(ids: list[str]) -> tuple[list[Any], PollCounter]:
    from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
    from airflow_provider_chamelaion.triggers.lipsync import LipsyncRequestTrigger

    counter = PollCounter(ChamelaionHook, "aget_request")
    triggers = [LipsyncRequestTrigger(request_id=i, poll_interval=POLL_INTERVAL) for i in ids]
    return triggers, counter


def _make_anchor(ids: list[str]) -> tuple[list[Any], PollCounter]:
    from airflow.providers.http.hooks.http import HttpAsyncHook
    from airflow.providers.http.triggers.http import HttpSensorTrigger

    counter = PollCounter(HttpAsyncHook, "run")
    triggers = [
        HttpSensorTrigger(
            endpoint=f"api/v1/lipsync/requests/{i}",
            http_conn_id="http_sim",
            method="GET",
            poke_interval=POLL_INTERVAL,
        )
        for i in ids
    ]
    return triggers, counter


async def _drive(trigger: Any, delay: float, outcome: dict[str, int]) -> None:
    await asyncio.sleep(delay)
    try:
        async for _event in trigger.run():
            outcome["events"] += 1
            return
    except asyncio.CancelledError:
        raise
    except Exception:
        outcome["errors"] += 1


async def _child_async(
    mode: str, ids: list[str], target_polls: int, max_seconds: float, profile: bool, freeze: bool
) -> dict[str, Any]:
    triggers, counter = (_make_ours if mode == "ours" else _make_anchor)(ids)
    outcome = {"events": 0, "errors": 0}

    # Warm-up with one extra trigger: lazy imports, the connection lookup, the shared SSL context.
    warm = (_make_ours if mode == "ours" else _make_anchor)(ids[:1])[0][0]
    warm_task = asyncio.create_task(_drive(warm, 0.0, outcome))
    deadline = time.monotonic() + 60
    while counter.count < 1:
        if warm_task.done() or time.monotonic() > deadline:
            raise RuntimeError(
                f"the warm-up trigger made no poll through {counter.name} (outcome {outcome}): "
                "the benchmark counts polls there; update PollCounter if the trigger polls elsewhere"
            )
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    warm_task.cancel()
    await asyncio.gather(warm_task, return_exceptions=True)
    gc.collect()
    tracked = len(gc.get_objects())
    if freeze:
        gc.freeze()
    baseline_rss = current_rss_kib()

    rng = random.Random(42)
    tasks = [asyncio.create_task(_drive(t, rng.uniform(0, POLL_INTERVAL), outcome)) for t in triggers]
    profiler = cProfile.Profile(time.process_time) if profile else None
    try:
        stats = await measure_window(
            lambda: counter.count,
            warmup=WARMUP_SECONDS,
            target_polls=target_polls,
            max_seconds=max_seconds,
            profiler=profiler,
        )
        rss = current_rss_kib()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    report: dict[str, Any] = {
        "mode": mode,
        "triggers": len(triggers),
        **stats,
        "gc_tracked_objects_at_start": tracked,
        "baseline_rss_kib": baseline_rss,
        "rss_kib": rss,
        "kib_per_trigger": (rss - baseline_rss) / len(triggers),
        "total_polls": counter.count,
        "events": outcome["events"],
        "errors": outcome["errors"],
    }
    if profiler is not None:
        report["profile_groups"], report["profile_functions"] = profile_summary(profiler, stats["polls"])
    return report


async def _survivors(ids: list[str], mode: str, polls: int = 5, interval: float = 0.4) -> dict[str, Any]:
    """What one poll leaves alive across the poll interval, by type: one trigger alone, a full
    collection before each snapshot, objects in a snapshot that the previous one did not hold."""
    triggers, counter = (_make_ours if mode == "ours" else _make_anchor)(ids[:1])
    outcome = {"events": 0, "errors": 0}
    task = asyncio.create_task(_drive(triggers[0], 0.0, outcome))
    try:
        while counter.count < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        # Snapshot half-way through each sleep: the trigger is idle, between two polls.
        await asyncio.sleep(interval / 2)
        snapshots: list[dict[int, str]] = []
        for _ in range(polls + 1):
            gc.collect()
            snapshots.append(
                {id(o): f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects()}
            )
            await asyncio.sleep(interval)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # Taken while this coroutine runs (its own sleep is over); its snapshot dicts are left out.
    from collections import Counter

    harness = {id(snapshot) for snapshot in snapshots}
    totals: Counter[str] = Counter()
    for before, after in itertools.pairwise(snapshots):
        totals.update(name for key, name in after.items() if key not in before and key not in harness)
    per_poll = {name: count / polls for name, count in totals.items()}
    return {
        "mode": mode,
        "survivors_per_poll": sum(per_poll.values()),
        "survivor_types": sorted(per_poll.items(), key=lambda item: -item[1])[:14],
        "polls_seen": counter.count,
    }


def child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["ours", "anchor", "ours-survivors", "anchor-survivors"])
    parser.add_argument("ids_file")
    parser.add_argument("target_polls", type=int)
    parser.add_argument("max_seconds", type=float)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--freeze", action="store_true")
    args = parser.parse_args(argv)
    ids = json.loads(Path(args.ids_file).read_text())
    if args.mode.endswith("-survivors"):
        emit(asyncio.run(_survivors(ids, args.mode.split("-")[0], interval=SURVIVOR_INTERVAL)))
        return 0
    if args.mode == "anchor":
        import airflow.providers.http.triggers.http  # noqa: F401 - imported before the baseline
    else:
        import airflow_provider_chamelaion.triggers.lipsync  # noqa: F401
    emit(
        asyncio.run(
            _child_async(args.mode, ids, args.target_polls, args.max_seconds, args.profile, args.freeze)
        )
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=argparse.REMAINDER, required=True)
    sys.exit(child(parser.parse_args().child))
