"""Running a ``LipsyncRequestTrigger`` in a test: its events, bounded waits, and the polls it made."""

from __future__ import annotations

import asyncio
import importlib
import json
import time
from collections.abc import Callable
from typing import Any

from airflow_provider_chamelaion.simulator import Simulator
from airflow_provider_chamelaion.simulator.state import CallRecord
from airflow_provider_chamelaion.triggers.lipsync import LipsyncRequestTrigger
from airflow_provider_chamelaion.version_compat import TriggerEvent

#: A safety net so a broken trigger or wait fails the test instead of hanging it; never a timing assertion.
SAFETY_TIMEOUT = 20.0


async def collect(trigger: LipsyncRequestTrigger) -> list[TriggerEvent]:
    """Every event ``run()`` yields, until the generator ends."""

    async def drain() -> list[TriggerEvent]:
        return [event async for event in trigger.run()]

    return await asyncio.wait_for(drain(), SAFETY_TIMEOUT)


async def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + SAFETY_TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


def only_event(events: list[TriggerEvent]) -> dict[str, Any]:
    assert len(events) == 1, events
    payload = events[0].payload
    json.dumps(payload)  # JSON primitives only: the triggerer stores it
    assert isinstance(payload, dict)
    return payload


def polls(simulator: Simulator, request_id: str) -> list[CallRecord]:
    """The status polls of ``request_id`` the simulator has logged so far."""
    return simulator.state.calls_to("GET", f"/requests/{request_id}$")


def class_at(classpath: str) -> Any:
    """The class a serialized trigger or link names, found as Airflow finds it (its import helper moved
    between lines: ``airflow.utils.module_loading``, ``airflow.sdk.module_loading``, ``airflow.sdk._shared``)."""
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)
