"""Measuring many pollers in one asyncio event loop: lag, CPU per poll, and a cProfile breakdown."""

from __future__ import annotations

import asyncio
import cProfile
import gc
import pstats
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

MONITOR_SLEEP = 0.005


async def _monitor(lags: list[float]) -> None:
    """Sleep 5 ms in a loop and record how late each wake-up is: the event loop's lag."""
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(MONITOR_SLEEP)
        lags.append(loop.time() - before - MONITOR_SLEEP)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class GcPauses:
    """Records every garbage collection's duration (``gc.callbacks``) while installed, in wall time (what
    the event loop waits) and in CPU time (what the collector costs, whatever else runs on the
    machine), and how many objects the collections of generation 1 promote to the oldest generation.

    Promotions are what schedule full collections: CPython runs one when the objects promoted since
    the last full collection exceed a quarter of those that survived it (the whole heap, Airflow's
    start-up objects included). An object a poll leaves alive across the poll interval is promoted.
    """

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self.cpu = 0.0
        self.promoted = 0
        self._started = 0.0
        self._cpu_started = 0.0
        self._young = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        generation = int(info["generation"])
        if phase == "start":
            # Counted before the clock starts: the lists built here are not part of the pause.
            self._young = len(gc.get_objects(0)) + len(gc.get_objects(1)) if generation == 1 else 0
            self._cpu_started = time.process_time()
            self._started = time.perf_counter()
        else:
            self.pauses.append((generation, time.perf_counter() - self._started))
            self.cpu += time.process_time() - self._cpu_started
            if generation == 1:
                self.promoted += max(0, self._young - int(info["collected"]))

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)

    def summary(self) -> dict[str, Any]:
        return {
            "gc_collections": len(self.pauses),
            "gc_gen2_collections": sum(1 for generation, _ in self.pauses if generation == 2),
            "gc_worst_pause_ms": max((pause for _, pause in self.pauses), default=0.0) * 1000,
            "gc_total_ms": sum(pause for _, pause in self.pauses) * 1000,
            "gc_cpu_seconds": self.cpu,
            "gc_promoted": self.promoted,
        }


async def measure_window(
    polls: Callable[[], int],
    *,
    warmup: float,
    target_polls: int,
    max_seconds: float,
    profiler: cProfile.Profile | None = None,
) -> dict[str, Any]:
    """With the pollers already started: wait ``warmup`` seconds, then measure until ``target_polls``
    more polls (or ``max_seconds``). ``polls`` returns the number of polls made so far."""
    lags: list[float] = []
    monitor = asyncio.create_task(_monitor(lags))
    try:
        await asyncio.sleep(warmup)
        ramp_lags = list(lags)
        lags.clear()
        polls_before = polls()
        with GcPauses() as gc_pauses:
            cpu_before = time.process_time()
            started = time.perf_counter()
            if profiler is not None:
                profiler.enable()
            deadline = started + max_seconds
            while polls() - polls_before < target_polls and time.perf_counter() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            if profiler is not None:
                profiler.disable()
            window = time.perf_counter() - started
            cpu = time.process_time() - cpu_before
        count = polls() - polls_before
        window_lags = list(lags)
    finally:
        monitor.cancel()
        await asyncio.gather(monitor, return_exceptions=True)
    return {
        "polls": count,
        "window_seconds": window,
        "cpu_seconds": cpu,
        "cpu_ms_per_poll": cpu * 1000 / max(count, 1),
        "lag_worst_ms": max(window_lags, default=0.0) * 1000,
        "lag_p99_ms": percentile(window_lags, 0.99) * 1000,
        "lag_p50_ms": percentile(window_lags, 0.50) * 1000,
        "lag_samples": len(window_lags),
        "ramp_lag_worst_ms": max(ramp_lags, default=0.0) * 1000,
        **gc_pauses.summary(),
    }


async def cyclic_garbage_per_call(call: Callable[[], Awaitable[Any]], calls: int = 100) -> dict[str, Any]:
    """Objects that ``call()`` leaves behind in reference cycles (freed only by the cycle collector),
    per call, from ``calls`` sequential calls with the collector off and ``DEBUG_SAVEALL`` on."""
    await call()
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(calls):
            await call()
        gc.collect()
        garbage = list(gc.garbage)
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
        gc.enable()
    types = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in garbage)
    del garbage
    named = [(name, count / calls) for name, count in types.most_common() if not name.startswith("builtins.")]
    return {"garbage_per_call": sum(types.values()) / calls, "garbage_types": named[:8]}


def group_of(filename: str) -> str:
    """The package a profiled function belongs to, for the breakdown."""
    if filename.startswith(("~", "<")):
        return "C builtins"
    parts = Path(filename).parts
    if "site-packages" in parts:
        index = parts.index("site-packages")
        top = parts[index + 1].removesuffix(".py")
        if top == "airflow" and len(parts) > index + 3:
            return f"airflow.{parts[index + 2]}"
        return top
    for ours in ("airflow_provider_chamelaion", "benchmarks"):
        if ours in parts:
            return ours if ours != "benchmarks" else "benchmarks (harness)"
    if "lib" in parts:  # the standard library: the module or package name
        after = parts[parts.index("lib") + 2 :]
        return f"stdlib {after[0].removesuffix('.py')}" if after else "stdlib"
    return Path(filename).stem


def profile_summary(
    profiler: cProfile.Profile, polls: int, *, groups: int = 12, functions: int = 15
) -> tuple[list[Any], list[Any]]:
    """Own time per package (share), and the top functions by own time (calls per poll, share)."""
    raw: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values()) or 1.0
    by_group: dict[str, float] = defaultdict(float)
    rows = []
    for (filename, line, name), (_primitive, calls, tottime, _cumtime, _callers) in raw.items():
        group = group_of(filename)
        by_group[group] += tottime
        where = f" ({Path(filename).name}:{line})" if line else ""
        rows.append((f"{group}: `{name}`{where}", calls / max(polls, 1), tottime / total))
    top_groups = sorted(((name, own / total) for name, own in by_group.items()), key=lambda kv: -kv[1])
    top_rows = sorted(rows, key=lambda row: -row[2])
    return top_groups[:groups], top_rows[:functions]
