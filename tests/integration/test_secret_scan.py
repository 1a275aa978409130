"""Secret scan: the example DAGs run end to end and the API key shows up nowhere it could leak.

The nightly (URL mode, mapped, deferrable sensor) and the upload (multipart, deferrable operator)
example DAGs run with ``dag.test()`` against the simulator, whose outputs live on another origin
(``http://localhost:<port>`` while the API is ``http://127.0.0.1:<port>``). Then ``API_KEY`` (a
distinctive string) is searched for in:

* everything written to stdout/stderr (``capfd``) and every log record at DEBUG (``caplog``);
* every file under the throwaway ``AIRFLOW_HOME``, recursively and as bytes (the SQLite metadata DB
  included, with its journal files);
* the metadata DB columns that hold task data: ``xcom.value``, ``trigger.kwargs`` (read while the
  triggers were running, raw and decrypted), ``rendered_task_instance_fields``,
  ``task_instance.next_kwargs`` and ``dag_run.conf`` (read while running and after);
* what ``LipsyncRequestTrigger.serialize()`` returned;
* and the simulator's call log: no call to the outputs' origin carried the ``x-api-key`` header.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from airflow_provider_chamelaion.operators.lipsync import LipsyncGenerateOperator
from airflow_provider_chamelaion.sensors.lipsync import LipsyncRequestSensor
from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig
from airflow_provider_chamelaion.triggers.lipsync import LipsyncRequestTrigger
from airflow_provider_chamelaion.version_compat import AIRFLOW_V_3_0_PLUS
from tests.harness.constants import API_KEY, EXAMPLE_DAGS
from tests.harness.dags import load_dag_file, repair_airflow2_dag_test

KEY = API_KEY.encode()
#: (table, columns) of the metadata DB where task data (and so a leaked key) would land.
DB_COLUMNS: dict[str, tuple[str, ...]] = {
    "xcom": ("value",),
    "trigger": ("kwargs",),
    "rendered_task_instance_fields": ("rendered_fields", "k8s_pod_yaml"),
    "task_instance": ("next_kwargs",),
    "dag_run": ("conf",),
}
_module_names = itertools.count()
#: A signed URL's query string (the simulator signs its output URLs with ``expires=`` and ``sig=``).
SIGNED_QUERY = re.compile(r"[?&](sig|expires|signature|x-amz-signature|x-goog-signature)=", re.I)


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    # Long enough that the waits defer (the upload's wait always does: it starts right after its POST;
    # the nightly's first wait usually does), short enough to keep the test quick.
    return SimulatorConfig(api_key=API_KEY, phases=(("queued", 1.0), ("running", 1.0)), output_size=32 * 1024)


@pytest.fixture
def outputs_elsewhere(simulator: Simulator) -> str:
    """Output URLs on another origin than the API (same server, other host name)."""
    origin = f"http://localhost:{simulator.port}"
    simulator.config.output_base_url = origin
    return origin


def load_example(name: str) -> ModuleType:
    return load_dag_file(EXAMPLE_DAGS / f"{name}.py", f"secret_scan_example_{next(_module_names)}")


def db_path() -> Path:
    from airflow import settings

    assert settings.engine is not None
    url = settings.engine.url
    assert url.get_backend_name() == "sqlite", f"the scan reads SQLite, not {url}"
    assert url.database
    return Path(url.database)


def read_db_columns() -> dict[str, list[Any]]:
    """The raw stored values of DB_COLUMNS (as the database holds them: JSON text, maybe encrypted)."""
    values: dict[str, list[Any]] = {}
    with sqlite3.connect(f"file:{db_path()}?mode=ro", uri=True, timeout=30) as connection:
        for table, columns in DB_COLUMNS.items():
            for column in columns:
                rows = connection.execute(f'SELECT "{column}" FROM "{table}"').fetchall()  # noqa: S608
                values[f"{table}.{column}"] = [row[0] for row in rows if row[0] is not None]
    return values


def decrypted_trigger_kwargs() -> list[Any]:
    """Every trigger row's kwargs as Airflow decrypts them (the raw column may be Fernet-encrypted)."""
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return [(row.classpath, row.kwargs) for row in session.scalars(select(Trigger))]


def holds_key(value: Any) -> bool:
    if isinstance(value, bytes):
        return KEY in value
    return API_KEY in (value if isinstance(value, str) else repr(value))


def files_holding_key(root: Path) -> list[str]:
    hits = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            try:
                data = path.read_bytes()
            except OSError as err:  # pragma: no cover - a file removed while walking
                hits.append(f"{path}: unreadable ({err})")
                continue
            if KEY in data:
                hits.append(str(path))
    return hits


class Snapshots:
    """What was in the DB and what the trigger serialized, captured while the DAGs were running."""

    def __init__(self) -> None:
        self.db: list[dict[str, list[Any]]] = []
        self.trigger_rows: list[Any] = []
        self.serialized: list[tuple[str, dict[str, Any]]] = []
        self.trigger_runs = 0

    def take(self) -> None:
        self.db.append(read_db_columns())
        self.trigger_rows.extend(decrypted_trigger_kwargs())


@pytest.fixture
def snapshots(monkeypatch: pytest.MonkeyPatch) -> Snapshots:
    """Snapshot the DB when each trigger starts and when each deferred task resumes."""
    taken = Snapshots()
    original_run = LipsyncRequestTrigger.run
    original_serialize = LipsyncRequestTrigger.serialize

    def run(self: LipsyncRequestTrigger) -> Any:
        taken.trigger_runs += 1
        taken.take()  # the trigger row exists while its trigger runs
        # What a triggerer stores for this trigger (Airflow 2's dag.test() runs it without storing it).
        taken.serialized.append(original_serialize(self))
        return original_run(self)

    def serialize(self: LipsyncRequestTrigger) -> tuple[str, dict[str, Any]]:
        result = original_serialize(self)
        taken.serialized.append(result)
        return result

    monkeypatch.setattr(LipsyncRequestTrigger, "run", run)
    monkeypatch.setattr(LipsyncRequestTrigger, "serialize", serialize)
    for operator in (LipsyncGenerateOperator, LipsyncRequestSensor):
        original: Callable[..., Any] = operator.execute_complete

        def execute_complete(self: Any, context: Any, event: Any = None, _original: Any = original) -> Any:
            taken.take()  # next_kwargs holds the trigger's event now
            return _original(self, context, event)

        monkeypatch.setattr(operator, "execute_complete", execute_complete)
    return taken


@pytest.fixture
def dag_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_db: str) -> Path:
    repair_airflow2_dag_test(monkeypatch)
    monkeypatch.setenv("CHAMELAION_OUTPUT_DIR", str(tmp_path / "outputs"))
    monkeypatch.setenv("CHAMELAION_MEDIA_DIR", str(tmp_path / "media"))
    monkeypatch.setenv("CHAMELAION_POLL_INTERVAL", "0.2")
    return tmp_path / "outputs"


def test_api_key_never_leaks_running_the_example_dags(
    dag_env: Path,
    simulator: Simulator,
    outputs_elsewhere: str,
    snapshots: Snapshots,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    airflow_home = Path(os.environ["AIRFLOW_HOME"])

    runs = {}
    for name in ("example_chamelaion_nightly_localization", "example_chamelaion_upload"):
        module = load_example(name)
        run = module.dag.test()
        assert run.state == "success", name
        runs[module.dag.dag_id] = run.run_id

    # The runs did what the scan relies on: jobs, waits in the triggerer, downloads from the other origin.
    state = simulator.state
    assert len(state.jobs) == 4 + 1
    assert snapshots.trigger_runs >= 1
    assert snapshots.serialized
    outputs = state.calls_to("GET", "^/outputs/")
    assert len(outputs) == 5
    assert len(list(dag_env.rglob("*.mp4"))) == 5

    # 1. Output captured on the file descriptors and every log record, at DEBUG.
    captured = capfd.readouterr()
    assert API_KEY not in captured.out
    assert API_KEY not in captured.err
    assert caplog.records
    assert API_KEY not in caplog.text
    for record in caplog.records:
        assert API_KEY not in record.getMessage(), record
        assert API_KEY not in (record.exc_text or "")
        assert not holds_key(record.args), record

    # 2. Every file under the throwaway AIRFLOW_HOME, as bytes (the SQLite DB and journals included).
    assert db_path().resolve().is_relative_to(airflow_home.resolve()), "the file scan must cover the DB"
    scanned_files = sorted(str(p.relative_to(airflow_home)) for p in airflow_home.rglob("*") if p.is_file())
    assert files_holding_key(airflow_home) == []

    # 3. The metadata DB columns that hold task data, while running and at the end.
    final = read_db_columns()
    for snapshot in [*snapshots.db, final]:
        for column, values in snapshot.items():
            assert not any(holds_key(value) for value in values), column
    assert final["xcom.value"], "the runs pushed XComs: the scan must have read some"
    assert final["rendered_task_instance_fields.rendered_fields"]
    if AIRFLOW_V_3_0_PLUS:
        # Airflow 2's dag.test() runs triggers inline, without a trigger row (the real-deployment test
        # scans the rows a 2.x triggerer writes).
        assert any(snapshot["trigger.kwargs"] for snapshot in snapshots.db), "no trigger row while running"
        assert snapshots.trigger_rows, "no trigger row decrypted while running"
    assert any(snapshot["task_instance.next_kwargs"] for snapshot in snapshots.db)
    for classpath, kwargs in snapshots.trigger_rows:
        assert not holds_key(json.dumps(kwargs, default=repr)), classpath
    # The trigger events Airflow stores (next_kwargs) and logs carry no signed output URL either.
    for snapshot in [*snapshots.db, final]:
        for column in ("task_instance.next_kwargs", "trigger.kwargs"):
            assert not any(SIGNED_QUERY.search(str(value)) for value in snapshot[column]), column
    assert SIGNED_QUERY.search(str(final["xcom.value"])), "XCom keeps the whole URL: the search works"
    # (At DEBUG, urllib3 logs each request line, the signed download URL's included: docs/secrets.md.)
    for record in caplog.records:
        if record.levelno >= logging.INFO:
            assert not SIGNED_QUERY.search(record.getMessage()), record.getMessage()

    # 4. What the trigger serialized (the triggerer stores it): connection id, never the key.
    for classpath, kwargs in snapshots.serialized:
        assert classpath == "airflow_provider_chamelaion.triggers.lipsync.LipsyncRequestTrigger"
        assert kwargs["chamelaion_conn_id"] == "chamelaion_default"
        assert not holds_key(json.dumps(kwargs))

    # 5. The key went to the API's origin only: never to the outputs' origin (localhost:<port>).
    assert outputs_elsewhere != simulator.origin
    assert all(not call.had_api_key for call in outputs)
    api_calls = state.calls_to(None, "^/api/")
    assert api_calls
    assert all(call.had_api_key for call in api_calls)
    with capfd.disabled():
        print(
            f"\nsecret scan: {len(caplog.records)} log records, {len(captured.out) + len(captured.err)} "
            f"chars of output, files under AIRFLOW_HOME {scanned_files}, {snapshots.trigger_runs} trigger "
            f"runs, {len(snapshots.db) + 1} DB snapshots, {len(snapshots.trigger_rows)} trigger rows, "
            f"{len(snapshots.serialized)} serialized triggers, {len(outputs)} output downloads without "
            f"the key, {len(api_calls)} API calls with it; runs {runs}"
        )


def test_serialized_trigger_never_holds_the_key(simulator: Simulator) -> None:
    trigger = LipsyncRequestTrigger("a-request", poll_interval=1.0, end_time=1.0e10)
    classpath, kwargs = trigger.serialize()
    assert classpath.endswith(".LipsyncRequestTrigger")
    assert API_KEY not in json.dumps(kwargs)
    assert set(kwargs) == {
        "request_id",
        "chamelaion_conn_id",
        "poll_interval",
        "end_time",
        "max_consecutive_errors",
        "still_waiting_interval",
        "hook_params",
        "try_number",
    }
    assert API_KEY not in repr(trigger)


def test_the_scanners_find_a_planted_key(tmp_path: Path) -> None:
    """The scan is not vacuous: each way of looking finds the key where it was planted."""
    (tmp_path / "clean.bin").write_bytes(b"\x00\xff" * 1000)
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "blob.db").write_bytes(b"\x00\x01SQLite" + KEY + b"\xfe")
    assert files_holding_key(tmp_path) == [str(tmp_path / "deep" / "er" / "blob.db")]
    assert holds_key({"kwargs": {"token": API_KEY}})
    assert holds_key(KEY)
    assert holds_key(json.dumps([API_KEY]))
    assert not holds_key({"password": "***"})
