"""A guard that fails a test when Airflow's synchronous connection lookup runs on an event loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from airflow_provider_chamelaion.version_compat import BaseHook


def forbid_sync_lookup_on_the_loop(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make ``BaseHook.get_connection`` raise when called on a thread running an event loop.

    Off the loop (a worker thread, as the provider uses where Airflow has no async masking) it runs as
    usual. Returns the names of the threads that did call it, so a test can check where it ran.
    """
    original = BaseHook.get_connection.__func__  # type: ignore[attr-defined]
    threads: list[str] = []

    def guarded(cls: type, conn_id: str) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            threads.append(threading.current_thread().name)
            return original(cls, conn_id)
        raise AssertionError(f"sync get_connection({conn_id!r}) called on the event loop")

    monkeypatch.setattr(BaseHook, "get_connection", classmethod(guarded))
    return threads
