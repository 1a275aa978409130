"""``SimulatorProcess``: the simulator in a subprocess, the harness of tests, benchmarks and the demo."""

from __future__ import annotations

import json
import os

import pytest


def test_the_simulator_runs_in_a_subprocess_on_a_free_port_until_the_block_ends() -> None:
    from airflow_provider_chamelaion.simulator.process import SimulatorProcess

    with SimulatorProcess(["--phases", "queued=0"], api_key="k-1") as sim:
        assert sim.call("GET", "/_simulator/jobs") == {"total": 0, "data": []}
        assert json.loads(sim.connection_json())["host"] == f"http://127.0.0.1:{sim.port}/api"
        pid = sim.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped and reaped
