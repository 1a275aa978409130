"""A local Chamelaion Lipsync API for tests, demos and offline DAG development.

It serves every call of the vendor's reference under ``/api`` (so its base URL looks like the real
one's), runs jobs through ``queued -> running -> completed|failed`` on a configurable clock, serves the
outputs itself, and can inject faults: scripted 429s with ``Retry-After``, 5xx, slow answers, dropped
connections, truncated bodies, malformed JSON and a job failure rate.

Start it from the shell::

    python -m airflow_provider_chamelaion.simulator --port 8089 --api-key KEY

or from Python (a free port, on a background thread)::

    from airflow_provider_chamelaion.simulator import Simulator

    with Simulator() as sim:
        print(sim.base_url)  # http://127.0.0.1:<port>/api
"""

from airflow_provider_chamelaion.simulator.server import Simulator
from airflow_provider_chamelaion.simulator.state import Fault, SimulatorConfig, SimulatorState

__all__ = ["Fault", "Simulator", "SimulatorConfig", "SimulatorState"]
