"""Runtime dependencies are what the provider imports; the simulator's server stack is an extra.

Two proofs:

* the declared lists match the code: the third-party modules the package and its example DAGs import
  are exactly the runtime dependencies, and the simulator's are exactly the ``simulator`` extra;
* the provider runs without the extra: a fresh interpreter in which FastAPI, Starlette, uvicorn and
  python-multipart cannot be imported loads every non-simulator module and makes real sync and async
  API calls, and importing the simulator there fails with an error that names the extra.

A separate virtualenv without the extra would prove nothing here: Airflow 3 itself depends on FastAPI
and uvicorn (its API server), so they would still be installed. An import hook that refuses them is
the stricter test: it also fails if Airflow code the provider pulls in were to import them.
"""

from __future__ import annotations

import ast
import sys
import textwrap
from importlib.metadata import requires
from pathlib import Path

from packaging.requirements import Requirement

from tests.harness.constants import API_KEY, ROOT
from tests.harness.processes import answer, run_python

PACKAGE = ROOT / "airflow_provider_chamelaion"
SIMULATOR = PACKAGE / "simulator"
#: Import name -> distribution name, for every third-party module the code may import.
DISTRIBUTIONS = {
    "airflow": "apache-airflow",
    "requests": "requests",
    "aiohttp": "aiohttp",
    "pendulum": "pendulum",
    "packaging": "packaging",
    "asgiref": "asgiref",
    "fsspec": "fsspec",
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "python_multipart": "python-multipart",
}
#: What the simulator extra brings; blocked in the subprocess below.
SERVER_STACK = ("fastapi", "starlette", "uvicorn", "python_multipart", "multipart")


def _declared(extra: str | None = None) -> set[str]:
    """Distributions the installed package's metadata (what pip reads) requires, base or for ``extra``."""
    names = set()
    for line in requires("airflow-provider-chamelaion") or []:
        requirement = Requirement(line)
        wanted = (
            requirement.marker is None
            if extra is None
            else (requirement.marker is not None and requirement.marker.evaluate({"extra": extra}))
        )
        if wanted:
            names.add(requirement.name)
    return names


def _third_party_imports(files: list[Path]) -> set[str]:
    """Distributions of the top-level modules ``files`` import (anywhere, lazy imports included)."""
    names: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    third_party = {
        n for n in names if n not in sys.stdlib_module_names and n != "airflow_provider_chamelaion"
    }
    unknown = third_party - DISTRIBUTIONS.keys()
    assert not unknown, f"imports of unknown distributions: {unknown}"
    return {DISTRIBUTIONS[name] for name in third_party}


def test_runtime_dependencies_are_what_the_provider_imports() -> None:
    provider_files = [p for p in PACKAGE.rglob("*.py") if SIMULATOR not in p.parents]
    example_dags = list((ROOT / "example_dags").glob("*.py"))
    declared = _declared()
    assert declared == {"apache-airflow", "requests", "aiohttp", "pendulum", "packaging", "asgiref", "fsspec"}
    assert _third_party_imports(provider_files + example_dags) == declared
    # pendulum only for the example DAGs; the package itself imports the others.
    assert _third_party_imports(provider_files) == declared - {"pendulum"}


def test_simulator_extra_is_what_the_simulator_imports() -> None:
    extra = _declared("simulator")
    assert extra == {"fastapi", "uvicorn", "python-multipart"}
    assert _third_party_imports(list(SIMULATOR.rglob("*.py"))) - {"apache-airflow"} == extra


_CHILD = textwrap.dedent(
    """
    import asyncio, importlib, importlib.abc, json, pkgutil, sys, threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    BLOCKED = set(sys.argv[1].split(","))

    class RefuseServerStack(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
            return None

    assert not BLOCKED & {m.split(".")[0] for m in sys.modules}
    sys.meta_path.insert(0, RefuseServerStack())

    class Api(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"id": "r-1", "status": "running"}).encode()
            self.send_response(200 if self.headers.get("x-api-key") == sys.argv[2] else 401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    import os
    os.environ["AIRFLOW_CONN_CHAMELAION_DEFAULT"] = json.dumps(
        {"conn_type": "chamelaion", "host": f"http://127.0.0.1:{server.server_port}/api", "password": sys.argv[2]}
    )

    import airflow_provider_chamelaion as package
    loaded = []
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not info.name.startswith(package.__name__ + ".simulator"):
            importlib.import_module(info.name)
            loaded.append(info.name)

    from airflow_provider_chamelaion.get_provider_info import get_provider_info
    from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
    from airflow_provider_chamelaion.triggers.lipsync import LipsyncRequestTrigger

    get_provider_info()
    sync_status = ChamelaionHook().get_request("r-1").status

    async def poll():
        trigger = LipsyncRequestTrigger("r-1", poll_interval=0.01, end_time=0)
        return [[e.payload["status"], e.payload["job_status"]] async for e in trigger.run()]

    events = asyncio.run(poll())
    try:
        import airflow_provider_chamelaion.simulator
        simulator_error = None
    except ImportError as err:
        simulator_error = str(err)
    server.shutdown()
    print("ANSWER " + json.dumps({
        "loaded": loaded,
        "sync_status": sync_status,
        "events": events,
        "simulator_error": simulator_error,
        "server_stack_loaded": sorted(BLOCKED & {m.split(".")[0] for m in sys.modules}),
    }))
    """
)


def _imported_by_airflow(modules: tuple[str, ...]) -> set[str]:
    """Which of ``modules`` ``import airflow`` itself imports on this line (Airflow 3.0's imports fastapi
    and starlette: it masks its config's secrets through the task SDK's comms models)."""
    probe = "import sys, airflow; print(','.join(sorted(m.split('.')[0] for m in sys.modules)))"
    result = run_python("-c", probe, timeout=120)
    return set(modules) & set(result.stdout.strip().splitlines()[-1].split(","))


def test_provider_runs_without_the_simulator_extra() -> None:
    # What Airflow itself imports cannot be blocked (nor told apart from the provider's own imports).
    blocked = [module for module in SERVER_STACK if module not in _imported_by_airflow(SERVER_STACK)]
    assert "uvicorn" in blocked  # no line's Airflow imports it
    report = answer(run_python("-c", _CHILD, ",".join(blocked), API_KEY, timeout=120))
    assert {
        "airflow_provider_chamelaion.hooks.chamelaion",
        "airflow_provider_chamelaion.client.session",
        "airflow_provider_chamelaion.operators.lipsync",
        "airflow_provider_chamelaion.sensors.lipsync",
        "airflow_provider_chamelaion.triggers.lipsync",
    } <= set(report["loaded"])
    assert report["sync_status"] == "running"  # a real GET over requests
    assert report["events"] == [["timeout", "running"]]  # a real poll over aiohttp, then the deadline
    assert report["server_stack_loaded"] == []
    error = report["simulator_error"]
    assert error is not None
    assert 'pip install "airflow-provider-chamelaion[simulator]"' in error
