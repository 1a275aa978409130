"""Shared fixtures. Airflow reads its environment at import time, so it is set up here first."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# The shared helpers assert too: have pytest rewrite their asserts as it does the tests'.
pytest.register_assert_rewrite("tests.helpers.context", "tests.helpers.dags", "tests.helpers.triggers")

#: Fixtures kept beside their helpers: ``s3_server`` (moto's S3 server, skipped where moto is missing).
pytest_plugins = ["tests.helpers.s3"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DAGS = ROOT / "example_dags"
#: A distinctive key: the secret scans search every output for it.
API_KEY = "sk-chmln-TEST-9f4e2a7c1b8d"
#: The public API's base URL as the requests-mock tests see it.
MOCK_BASE_URL = "https://api.chamelaion.test/api"

# Guarded: this module must configure Airflow once per process even if imported under two names.
if "CHAMELAION_TESTS_AIRFLOW_HOME" not in os.environ:
    os.environ["CHAMELAION_TESTS_AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="chamelaion-tests-airflow-")
_AIRFLOW_HOME = os.environ["CHAMELAION_TESTS_AIRFLOW_HOME"]
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(EXAMPLE_DAGS)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
os.environ["CHAMELAION_POLL_INTERVAL"] = "0.3"

from airflow_provider_chamelaion.client.retry import RetryPolicy  # noqa: E402
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook  # noqa: E402
from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig  # noqa: E402


class RecordedSleeps(list):
    """Stands in for time.sleep/asyncio.sleep in a RetryPolicy: records each wait, waits not."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)

    async def async_sleep(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> RecordedSleeps:
    return RecordedSleeps()


@pytest.fixture
def retry_policy(sleeps: RecordedSleeps) -> RetryPolicy:
    """The default policy's decisions, with waits recorded instead of slept."""
    return RetryPolicy(sleep=sleeps, async_sleep=sleeps.async_sleep)


def connection_json(host: str, password: str | None = API_KEY) -> str:
    import json

    payload = {"conn_type": "chamelaion", "host": host}
    if password is not None:
        payload["password"] = password
    return json.dumps(payload)


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


def idle(simulator: Simulator) -> Simulator:
    """``simulator``, once every call made so far has been answered (statuses final)."""
    simulator.state.wait_idle()
    return simulator


@pytest.fixture
def sim_hook(simulator: Simulator, retry_policy: RetryPolicy) -> ChamelaionHook:
    return ChamelaionHook(retry_policy=retry_policy)


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """A migrated metadata database (SQLite in the throwaway AIRFLOW_HOME), for dag.test()."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    return _AIRFLOW_HOME
