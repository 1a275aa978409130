"""The in-process simulator (``conftest``'s ``simulator`` fixture) in tests."""

from __future__ import annotations

from airflow_provider_chamelaion.simulator import Simulator


def idle(simulator: Simulator) -> Simulator:
    """``simulator``, once every call made so far has been answered (statuses final)."""
    simulator.state.wait_idle()
    return simulator
