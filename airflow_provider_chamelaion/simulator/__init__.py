"""A local Chamelaion Lipsync API for tests, demos and offline DAG development.

It serves every call of the vendor's reference under ``/api`` (so its base URL looks like the real
one's), runs jobs through ``queued -> running -> completed|failed`` on a configurable clock, serves the
outputs itself, and can inject faults: scripted 429s with ``Retry-After``, 5xx, slow answers, dropped
connections, truncated bodies, malformed JSON and a job failure rate.

It needs the ``simulator`` extra (its server stack: FastAPI, uvicorn, python-multipart), which a
worker or triggerer never needs::

    pip install "airflow-provider-chamelaion[simulator]"

Start it from the shell::

    python -m airflow_provider_chamelaion.simulator --port 8089 --api-key KEY

or from Python (a free port, on a background thread)::

    from airflow_provider_chamelaion.simulator import Simulator

    with Simulator() as sim:
        print(sim.base_url)  # http://127.0.0.1:<port>/api
"""

#: The extra that installs the simulator's server stack.
EXTRA = "simulator"

# Imported first, so that a missing piece fails here with the fix rather than deep inside the server.
try:
    import fastapi  # noqa: F401
    import python_multipart  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as err:
    raise ImportError(
        f"the Chamelaion simulator needs {err.name or 'its server stack'} (FastAPI, uvicorn, "
        f'python-multipart): install the provider with its "{EXTRA}" extra, '
        f'pip install "airflow-provider-chamelaion[{EXTRA}]". The provider itself (hook, operators, '
        "sensor, trigger) does not need it.",
        name=err.name,
    ) from err

from airflow_provider_chamelaion.simulator.server import Simulator  # noqa: E402
from airflow_provider_chamelaion.simulator.state import Fault, SimulatorConfig, SimulatorState  # noqa: E402

__all__ = ["Fault", "Simulator", "SimulatorConfig", "SimulatorState"]
