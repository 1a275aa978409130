"""The Airflow environment every test runs in, and the shared fixtures.

Airflow reads its environment at import time, so it is set up here, before anything imports Airflow.
Shared helpers and constants are in ``tests.harness``; this file holds only set-up and fixtures.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# The shared helpers assert too: have pytest rewrite their asserts as it does the tests'.
pytest.register_assert_rewrite("tests.harness")

#: Fixtures kept beside their helpers: ``s3_server`` (moto's S3 server, skipped where moto is missing).
pytest_plugins = ["tests.harness.s3"]

from tests.harness.constants import API_KEY, EXAMPLE_DAGS, MOCK_BASE_URL, ROOT, connection_json  # noqa: E402

# Guarded: this module must configure Airflow once per process even if imported under two names.
# One AIRFLOW_HOME (and SQLite metadata DB) per pytest-xdist worker: workers inherit the controller's
# environment, so each keys its own (PYTEST_XDIST_WORKER is set before conftest.py is imported).
_HOME_VARIABLE = "CHAMELAION_TESTS_AIRFLOW_HOME" + os.environ.get("PYTEST_XDIST_WORKER", "").upper()
if _HOME_VARIABLE not in os.environ:
    os.environ[_HOME_VARIABLE] = tempfile.mkdtemp(prefix="chamelaion-tests-airflow-")
_AIRFLOW_HOME = os.environ[_HOME_VARIABLE]
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(EXAMPLE_DAGS)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
os.environ["CHAMELAION_POLL_INTERVAL"] = "0.3"

from airflow_provider_chamelaion.client.retry import RetryPolicy  # noqa: E402
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook  # noqa: E402
from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig  # noqa: E402
from tests.harness.retry import RecordedSleeps  # noqa: E402

# The compatibility legs test the wheel users install, not the source tree (ci/compat/test-compat).
if os.environ.get("CHAMELAION_TESTS_INSTALLED_PROVIDER") == "1":
    import airflow_provider_chamelaion

    _provider = Path(airflow_provider_chamelaion.__file__).resolve().parent
    if _provider == ROOT / "airflow_provider_chamelaion":
        raise pytest.UsageError(
            f"the provider was imported from the source tree ({_provider}), not from the installed wheel: "
            "run the venv's pytest (not python -m pytest) with --import-mode=append"
        )


@pytest.fixture
def sleeps() -> RecordedSleeps:
    return RecordedSleeps()


@pytest.fixture
def retry_policy(sleeps: RecordedSleeps) -> RetryPolicy:
    """The default policy's decisions, with waits recorded instead of slept."""
    return RetryPolicy(sleep=sleeps, async_sleep=sleeps.async_sleep)


@pytest.fixture
def mock_conn(monkeypatch: pytest.MonkeyPatch) -> str:
    """``chamelaion_default`` pointing at MOCK_BASE_URL with API_KEY (for requests-mock)."""
    monkeypatch.setenv("AIRFLOW_CONN_CHAMELAION_DEFAULT", connection_json(MOCK_BASE_URL))
    return MOCK_BASE_URL


@pytest.fixture
def plain_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """This installation as a user's plain one: no provider registers object storage, and no s3fs.

    The dev environment has the Amazon provider and s3fs (the PostgreSQL/Celery/S3 deployment test needs
    them); the compatibility legs are plain installs and run the same tests unpatched.
    """
    from airflow_provider_chamelaion.client import media

    monkeypatch.setattr(media, "_airflow_has_filesystem", lambda scheme: scheme in {"file", "local"})
    monkeypatch.setitem(sys.modules, "s3fs", None)  # importlib.util.find_spec("s3fs") is then None


@pytest.fixture
def mock_hook(mock_conn: str, retry_policy: RetryPolicy) -> ChamelaionHook:
    return ChamelaionHook(retry_policy=retry_policy)


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    """Override in a test module to change the simulator's behaviour."""
    return SimulatorConfig(api_key=API_KEY, phases=(("queued", 0.2), ("running", 0.3)), output_size=64 * 1024)


@pytest.fixture(scope="session")
def simulator_server() -> Iterator[Simulator]:
    """One simulator server for the whole session: starting and stopping one per test costs ~0.2 s."""
    with Simulator(SimulatorConfig(api_key=API_KEY)) as sim:
        yield sim


@pytest.fixture
def simulator(
    simulator_server: Simulator, simulator_config: SimulatorConfig, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Simulator]:
    """The session's simulator, emptied and configured with ``simulator_config`` for this test, with
    ``chamelaion_default`` pointing at it."""
    simulator_server.reset(simulator_config)
    monkeypatch.setenv("AIRFLOW_CONN_CHAMELAION_DEFAULT", simulator_server.connection_json())
    yield simulator_server
    simulator_server.reset()


@pytest.fixture
def sim_hook(simulator: Simulator, retry_policy: RetryPolicy) -> ChamelaionHook:
    return ChamelaionHook(retry_policy=retry_policy)


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """A migrated metadata database (SQLite in the throwaway AIRFLOW_HOME), for dag.test()."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    return _AIRFLOW_HOME
