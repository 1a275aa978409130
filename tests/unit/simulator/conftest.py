"""Fixtures of the simulator's own tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_chamelaion.simulator import Simulator
from tests.harness.simulator import FakeClock, fake_clock, make_config


@pytest.fixture
def make_simulator(simulator: Simulator) -> Callable[..., Simulator]:
    """The session's simulator, emptied and given ``make_config(**overrides)`` for the rest of the test."""

    def make(**overrides: Any) -> Simulator:
        simulator.reset(make_config(**overrides))
        return simulator

    return make


@pytest.fixture
def clock(simulator: Simulator) -> FakeClock:
    return fake_clock(simulator)
