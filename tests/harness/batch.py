"""Batch operators in tests: a catalogue of items, an operator on the simulator with short retry waits,
and running it to its end (execute, run each deferral's trigger, resume)."""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_provider_chamelaion.client.retry import RetryPolicy
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
from airflow_provider_chamelaion.operators.batch import LipsyncBatchGenerateOperator
from airflow_provider_chamelaion.simulator import Simulator
from airflow_provider_chamelaion.triggers.batch import LipsyncBatchTrigger
from tests.harness.airflow_names import TaskDeferred
from tests.harness.simulator import idle

#: A safety net so a broken trigger fails the test instead of hanging it; never a timing assertion.
SAFETY_TIMEOUT = 300.0
#: The default policy's decisions with short waits (a server's Retry-After is still honoured).
FAST_RETRIES = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, jitter=0)


def items(count: int, prefix: str = "title") -> list[dict[str, Any]]:
    """A catalogue of ``count`` valid items, ``reference_id`` ``{prefix}-{n}-fr``."""
    return [
        {
            "video_url": f"https://cdn.example.com/{prefix}-{n}.mp4",
            "audio_url": f"https://cdn.example.com/{prefix}-{n}-fr.wav",
            "reference_id": f"{prefix}-{n}-fr",
        }
        for n in range(count)
    ]


def make_batch(tmp_path: Path, catalogue: Any, **kwargs: Any) -> LipsyncBatchGenerateOperator:
    """A batch operator on ``chamelaion_default`` with its manifest in ``tmp_path`` and short retry waits."""
    kwargs.setdefault("poll_interval", 0.1)
    operator = LipsyncBatchGenerateOperator(
        task_id="backfill", catalogue=catalogue, manifest_path=str(tmp_path / "manifest.jsonl"), **kwargs
    )
    operator.hook = ChamelaionHook(retry_policy=FAST_RETRIES)
    return operator


def jobs_per_reference(simulator: Simulator) -> dict[str, int]:
    """How many jobs the simulator holds for each ``reference_id``, once it is idle."""
    counts: dict[str, int] = {}
    for job in idle(simulator).state.jobs.values():
        counts[job.reference_id or ""] = counts.get(job.reference_id or "", 0) + 1
    return counts


@dataclass
class BatchRun:
    """What happened: the summary (or the error), every trigger's kwargs and event, in order."""

    summary: dict[str, Any] | None = None
    error: BaseException | None = None
    triggers: list[dict[str, Any]] = field(default_factory=list)
    #: (jobs pending, API calls) of every poll cycle of every trigger, in order.
    cycles: list[tuple[int, int]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


async def run_trigger(trigger: LipsyncBatchTrigger) -> dict[str, Any]:
    async def drain() -> list[Any]:
        return [event async for event in trigger.run()]

    events = await asyncio.wait_for(drain(), SAFETY_TIMEOUT)
    assert len(events) == 1, events
    payload = events[0].payload
    json.dumps(payload)  # JSON primitives only: the triggerer stores it
    assert isinstance(payload, dict)
    return payload


def execute(operator: LipsyncBatchGenerateOperator, context: Any) -> dict[str, Any]:
    """``operator.execute(context)``, on any of the test's threads.

    Off the main thread, the function under Airflow's guard: Airflow 2 wraps ``execute`` in a guard whose
    state is set up per thread, on the thread that imported it, and fails on any other
    (``AttributeError: '_thread._local' object has no attribute 'callers'``). A worker runs each task
    instance on its process's main thread, so the guard never sees this; the wrapped function is what a
    worker runs.
    """
    if threading.current_thread() is threading.main_thread():
        return operator.execute(context)
    function = type(operator).execute
    result: dict[str, Any] = getattr(function, "__wrapped__", function)(operator, context)
    return result


def run_batch(
    operator: LipsyncBatchGenerateOperator,
    context: Any,
    *,
    first_step: Callable[[], dict[str, Any]] | None = None,
) -> BatchRun:
    """Execute (or ``first_step``), and for every deferral re-create the trigger from its serialized form
    and run it, then resume the operator with its event."""
    run = BatchRun()
    step: Callable[[], dict[str, Any]] = first_step or (lambda: execute(operator, context))
    while True:
        try:
            run.summary = step()
            return run
        except TaskDeferred as deferred:
            classpath, kwargs = deferred.trigger.serialize()
            assert classpath.endswith("LipsyncBatchTrigger")
            run.triggers.append(kwargs)
            trigger = LipsyncBatchTrigger(**kwargs)
            event = asyncio.run(run_trigger(trigger))
            run.cycles.extend(trigger.cycles)
            run.events.append(event)
            step = functools.partial(getattr(operator, deferred.method_name), context, event)
        except Exception as err:
            run.error = err
            return run
