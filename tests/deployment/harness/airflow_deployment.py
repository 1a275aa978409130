"""A real Airflow deployment on loopback, for end-to-end tests: one process group per component.

``airflow db migrate`` runs first; then the API server, scheduler (LocalExecutor), DAG processor and
triggerer (on Airflow 2: only the scheduler, which parses the DAGs itself, and the triggerer; there is no
API server, so tests use :meth:`AirflowDeployment.cli` and the database) each run as
``airflow <component>`` in a process group of their own, so that one of them (the
triggerer, typically) can be killed and started again while the others keep running. Every process's
stdout and stderr go to files, so that tests can read (and scan) them.

    with AirflowDeployment(tmp_path / "airflow", dags_folder=..., env={...}, output_dir=tmp_path) as af:
        af.wait_until_healthy()
        runs = DagRuns(af)
        runs.wait_until_parsed("my_dag")
        run_id = runs.trigger("my_dag", None)
        af.restart("triggerer")
        state = runs.wait_until_ended("my_dag", run_id, timeout=120)

:class:`DagRuns` triggers runs and reads their states through the REST API on Airflow 3, the CLI and the
database on Airflow 2; :func:`db_rows` and :func:`trigger_rows` read the SQLite metadata database;
:func:`wait_for` polls a condition with a deadline.

Stopping sends SIGINT to every group (Airflow shuts down cleanly on it), then SIGKILL to whatever is
left, including task processes that LocalExecutor workers put in process groups of their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import psutil
import requests
from cryptography.fernet import Fernet

from airflow_provider_chamelaion.simulator.process import free_port
from airflow_provider_chamelaion.version_compat import AIRFLOW_V_3_0_PLUS

T = TypeVar("T")

COMPONENTS = (
    ("api-server", "scheduler", "dag-processor", "triggerer")
    if AIRFLOW_V_3_0_PLUS
    else ("scheduler", "triggerer")
)
#: Airflow 2's log servers bind every interface ([::]) with no setting to narrow it; the tests read the
#: log files themselves, so on Airflow 2 the components serve none (loopback only).
_COMPONENT_ARGS: dict[str, tuple[str, ...]] = (
    {} if AIRFLOW_V_3_0_PLUS else {"scheduler": ("--skip-serve-logs",), "triggerer": ("--skip-serve-logs",)}
)
#: Restores SIGINT to its default before exec'ing Airflow: a process started from a background job
#: inherits SIGINT ignored, and then Airflow could only be stopped by SIGTERM, which orphans workers.
_LAUNCHER = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


@dataclass
class Component:
    name: str
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    files: list[IO[bytes]] = field(default_factory=list)
    #: Every process ever seen in the component's tree (their own process groups included).
    seen: dict[int, psutil.Process] = field(default_factory=dict)
    #: How stopping went: seconds until the process exited after the first signal, and whether it
    #: needed SIGKILL.
    stop_seconds: float | None = None
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def remember_tree(self) -> None:
        try:
            root = psutil.Process(self.pid)
            for proc in [root, *root.children(recursive=True)]:
                self.seen.setdefault(proc.pid, proc)
        except psutil.Error:
            pass


class AirflowDeployment:
    """Airflow's components as separate processes on loopback, in a throwaway ``home``.

    :param home: AIRFLOW_HOME (created); the SQLite metadata database is ``home/airflow.db``.
    :param dags_folder: the DAGs folder.
    :param env: extra environment for every component (connections, DAG settings, ...).
    :param output_dir: where each process's stdout/stderr files go (default: ``home/../process-output``).
    """

    def __init__(
        self,
        home: Path,
        *,
        dags_folder: Path,
        env: Mapping[str, str] | None = None,
        output_dir: Path | None = None,
        parallelism: int = 4,
    ) -> None:
        self.home = home
        self.home.mkdir(parents=True, exist_ok=True)
        self.output_dir = output_dir or home.parent / "process-output"
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.api_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        self.bin_dir = Path(sys.executable).parent
        self.airflow = self.bin_dir / "airflow"
        self.components: dict[str, Component] = {}
        self.stopped: list[Component] = []
        #: Processes outside every component's tree that :meth:`stop` found and killed.
        self.orphans_killed: list[tuple[int, list[str]]] = []
        self._runs = 0
        self._token: str | None = None
        self.session = requests.Session()
        # The test process's own Airflow settings (AIRFLOW_HOME, UNIT_TEST_MODE, DAGS_FOLDER, ...),
        # connections and pytest's markers must not leak into the deployment.
        base = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AIRFLOW", "PYTEST_", "CHAMELAION_", "_AIRFLOW"))
        }
        self.fernet_key = Fernet.generate_key().decode()
        self.env: dict[str, str] = {
            **base,
            "PATH": f"{self.bin_dir}{os.pathsep}{base.get('PATH', '')}",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            **(env or {}),
        }
        if not AIRFLOW_V_3_0_PLUS:
            # Airflow 2 refuses LocalExecutor on SQLite unless this switch (Airflow's own test suite
            # sets it) is on; Airflow 3 allows it. One run with a handful of tasks is well within what
            # SQLite's locking copes with, as it does on Airflow 3.
            self.env["_AIRFLOW__SKIP_DATABASE_EXECUTOR_COMPATIBILITY_CHECK"] = "1"

    # -- processes -------------------------------------------------------------------------------

    @property
    def db_path(self) -> Path:
        return self.home / "airflow.db"

    def _open_output(self, name: str) -> tuple[Path, Path, IO[bytes], IO[bytes]]:
        self._runs += 1
        stem = f"{self._runs:02d}-{name}"
        out, err = self.output_dir / f"{stem}.stdout", self.output_dir / f"{stem}.stderr"
        return out, err, open(out, "wb"), open(err, "wb")

    def migrate(self, timeout: float = 180) -> None:
        """``airflow db migrate``: creates airflow.cfg and the SQLite database."""
        _out, err, out_file, err_file = self._open_output("db-migrate")
        with out_file, err_file:
            code = subprocess.call(
                [str(self.airflow), "db", "migrate"],
                env=self.env,
                stdout=out_file,
                stderr=err_file,
                timeout=timeout,
            )
        if code != 0:
            raise RuntimeError(f"airflow db migrate failed ({code}):\n{err.read_text()[-3000:]}")

    def cli(self, *args: str, timeout: float = 120) -> str:
        """Run ``airflow <args>`` to completion (output kept with the components'); return its stdout."""
        out, err, out_file, err_file = self._open_output("cli-" + "-".join(args[:2]))
        with out_file, err_file:
            code = subprocess.call(
                [str(self.airflow), *args], env=self.env, stdout=out_file, stderr=err_file, timeout=timeout
            )
        if code != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed ({code}):\n{err.read_text()[-3000:]}")
        return out.read_text()

    def start_component(
        self,
        name: str,
        env: Mapping[str, str] | None = None,
        *,
        argv: list[str] | None = None,
        cwd: Path | None = None,
    ) -> Component:
        """Start ``airflow <name>`` (or ``airflow <argv>``) in a process group of its own (a new session)."""
        if name in self.components and self.components[name].alive():
            raise RuntimeError(f"{name} is already running")
        out, err, out_file, err_file = self._open_output(name)
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _LAUNCHER,
                str(self.airflow),
                *(argv or [name, *_COMPONENT_ARGS.get(name, ())]),
            ],
            env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=out_file,
            stderr=err_file,
            start_new_session=True,
            cwd=cwd,
        )
        component = Component(name, process, out, err, [out_file, err_file])
        self.components[name] = component
        return component

    def start(self, components: Iterable[str] = COMPONENTS) -> None:
        self.migrate()
        for name in components:
            self.start_component(name)

    def _signal_group(self, component: Component, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(component.pid, sig)

    def _wait_all(self, components: list[Component], timeout: float) -> None:
        """Wait until every component has exited or ``timeout`` seconds have passed."""
        start = time.monotonic()
        waiting = list(components)
        while waiting and time.monotonic() < start + timeout:
            for component in list(waiting):
                if component.alive():
                    component.remember_tree()
                else:
                    component.stop_seconds = round(time.monotonic() - start, 1)
                    waiting.remove(component)
            time.sleep(0.1)

    def _finish(self, components: list[Component]) -> None:
        """SIGKILL whatever is left of ``components`` (groups and every process seen), reap, close files."""
        for component in components:
            component.remember_tree()
            component.killed = component.alive()
            self._signal_group(component, signal.SIGKILL)
            for proc in component.seen.values():
                try:
                    if proc.is_running():
                        proc.kill()
                except psutil.Error:
                    pass
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.process.wait(10)
            for file in component.files:
                file.close()

    def stop_component(self, name: str, grace: float = 10.0) -> Component:
        """SIGTERM the component's process group, SIGKILL it after ``grace`` seconds."""
        component = self.components.pop(name)
        component.remember_tree()
        self._signal_group(component, signal.SIGTERM)
        self._wait_all([component], grace)
        self._finish([component])
        self.stopped.append(component)
        return component

    def restart(self, name: str, grace: float = 10.0, env: Mapping[str, str] | None = None) -> Component:
        self.stop_component(name, grace)
        return self.start_component(name, env)

    def stop(self, grace: float = 10.0) -> None:
        """SIGINT every group, wait up to ``grace`` seconds, then SIGKILL what is left."""
        self.session.close()  # no idle keep-alive connection for the API server to wait on
        running = list(self.components.values())
        for component in running:
            component.remember_tree()
            self._signal_group(component, signal.SIGINT)
        self._wait_all(running, grace)
        self._finish(running)
        self.stopped.extend(running)
        self.components.clear()
        for proc in self.leftover_processes():  # e.g. a task process a killed worker left behind
            with contextlib.suppress(psutil.Error):
                self.orphans_killed.append((proc.pid, proc.cmdline()))
                proc.kill()

    def leftover_processes(self) -> list[psutil.Process]:
        """Processes still running with this deployment's AIRFLOW_HOME in their environment."""
        found = []
        homes = self._homes()
        for proc in psutil.process_iter():
            if proc.pid == os.getpid():
                continue
            try:
                if proc.environ().get("AIRFLOW_HOME") in homes and proc.status() != "zombie":
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    def _homes(self) -> set[str]:
        """Every AIRFLOW_HOME this deployment's processes run with."""
        return {str(self.home)}

    def output_files(self) -> list[Path]:
        """Every stdout/stderr file of every process started (db migrate included)."""
        return sorted(self.output_dir.glob("*.std*"))

    def diagnostics(self, *facts: str, chars: int = 2500) -> str:
        """What a failed deployment test prints: ``facts``, then the end of every process's output."""
        parts = list(facts)
        for path in self.output_files():
            try:
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
            except OSError as err:
                parts.append(f"--- {path.name}\n<{err}>")
        return "\n".join(parts)

    def __enter__(self) -> AirflowDeployment:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the REST API ----------------------------------------------------------------------------

    def check_alive(self) -> None:
        for component in self.components.values():
            if not component.alive():
                raise RuntimeError(
                    f"airflow {component.name} exited with {component.process.returncode}:\n"
                    f"{component.stderr_path.read_text(errors='replace')[-3000:]}"
                )

    def wait_until_healthy(self, timeout: float = 120) -> dict[str, Any]:
        """Wait until the API server answers and the scheduler, triggerer and DAG processor are healthy."""
        if not AIRFLOW_V_3_0_PLUS:
            return self._wait_until_jobs_running(timeout)
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                response = self.session.get(f"{self.base_url}/api/v2/monitor/health", timeout=5)
                last = response.text
                if response.status_code == 200:
                    health = response.json()
                    if all(
                        (health.get(part) or {}).get("status") == "healthy"
                        for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
                    ):
                        return dict(health)
            except requests.RequestException as err:
                last = err
            time.sleep(1)
        raise TimeoutError(f"Airflow did not become healthy in {timeout} s; last answer: {last}")

    def _wait_until_jobs_running(self, timeout: float) -> dict[str, Any]:
        """Airflow 2 (no API server): wait until the scheduler and triggerer jobs run, read from the DB."""
        deadline = time.monotonic() + timeout
        wanted = {"SchedulerJob": "scheduler", "TriggererJob": "triggerer"}
        running: set[str] = set()
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(sqlite3.Error):
                rows = db_rows(self.db_path, "SELECT job_type FROM job WHERE state = 'running'")
                running = {job_type for (job_type,) in rows}
            if running >= set(wanted):
                return {wanted[job]: {"status": "healthy"} for job in sorted(running & set(wanted))}
            time.sleep(1)
        raise TimeoutError(f"Airflow did not become healthy in {timeout} s; jobs running: {running}")

    def admin_password(self) -> str:
        path = self.home / "simple_auth_manager_passwords.json.generated"
        return str(json.loads(path.read_text())["admin"])

    def token(self) -> str:
        if self._token is None:
            response = self.session.post(
                f"{self.base_url}/auth/token",
                json={"username": "admin", "password": self.admin_password()},
                timeout=30,
            )
            response.raise_for_status()
            self._token = str(response.json()["access_token"])
        return self._token

    def api_response(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        return self.session.request(method, f"{self.base_url}{path}", headers=headers, timeout=30, **kwargs)

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.api_response(method, path, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {response.status_code}: {response.text[:2000]}")
        return response.json()


# -- reading a deployment ------------------------------------------------------------------------------


def wait_for(
    what: str,
    check: Callable[[], T | None],
    timeout: float,
    every: float = 0.5,
    *,
    diagnostics: Callable[[], str] | None = None,
) -> T:
    """Call ``check`` every ``every`` seconds until it returns something (not None, not False); return
    that. After ``timeout`` seconds: TimeoutError, or an AssertionError that ends with ``diagnostics()``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            message = f"timed out after {timeout} s waiting for {what}"
            if diagnostics is not None:
                raise AssertionError(f"{message}\n{diagnostics()}")
            raise TimeoutError(message)
        time.sleep(every)


def db_rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read-only query of the deployment's SQLite database (short, so writers are not held up)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def trigger_rows(db: Path, fernet: Fernet) -> list[dict[str, Any]]:
    """The trigger table, kwargs decrypted (Airflow stores them Fernet-encrypted)."""
    rows = []
    for trigger_id, classpath, kwargs, triggerer_id in db_rows(
        db, "SELECT id, classpath, kwargs, triggerer_id FROM trigger"
    ):
        text = kwargs if kwargs.startswith("{") else fernet.decrypt(kwargs.encode()).decode()
        rows.append(
            {
                "id": trigger_id,
                "classpath": classpath,
                "kwargs": text,
                "encrypted_kwargs": kwargs,
                "triggerer_id": triggerer_id,
            }
        )
    return rows


class DagRuns:
    """Trigger DAG runs and read their states: the REST API on Airflow 3, the CLI and the database on 2."""

    def __init__(self, deployment: AirflowDeployment) -> None:
        self.deployment = deployment
        self.db = deployment.db_path

    def parsed(self, dag_ids: tuple[str, ...]) -> bool:
        self.deployment.check_alive()
        if not AIRFLOW_V_3_0_PLUS:
            marks = ",".join("?" * len(dag_ids))
            found = db_rows(self.db, f"SELECT dag_id FROM dag WHERE dag_id IN ({marks})", dag_ids)  # noqa: S608
            return len(found) == len(dag_ids)
        return all(
            self.deployment.api_response("GET", f"/api/v2/dags/{dag_id}").status_code == 200
            for dag_id in dag_ids
        )

    def wait_until_parsed(self, *dag_ids: str, timeout: float = 120) -> None:
        """Wait until the DAG processor (Airflow 2: the scheduler) has stored every one of ``dag_ids``."""
        wait_for(f"{', '.join(dag_ids)} to be parsed", lambda: self.parsed(dag_ids), timeout, every=1)

    def is_paused(self, dag_id: str) -> bool:
        if not AIRFLOW_V_3_0_PLUS:
            return bool(db_rows(self.db, "SELECT is_paused FROM dag WHERE dag_id = ?", (dag_id,))[0][0])
        return bool(self.deployment.api("GET", f"/api/v2/dags/{dag_id}")["is_paused"])

    def trigger(self, dag_id: str, logical_date: datetime | None) -> str:
        """A manual run; ``logical_date=None`` is a run without one (Airflow 3 only)."""
        if AIRFLOW_V_3_0_PLUS:
            body = {"logical_date": None if logical_date is None else logical_date.isoformat()}
            return str(self.deployment.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)["dag_run_id"])
        assert logical_date is not None, "every Airflow 2 run has a logical date"
        run_id = f"manual__{logical_date.isoformat()}"
        self.deployment.cli(
            "dags", "trigger", "--run-id", run_id, "--exec-date", logical_date.isoformat(), dag_id
        )
        return run_id

    def state(self, dag_id: str, run_id: str) -> str:
        if AIRFLOW_V_3_0_PLUS:
            return str(self.deployment.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])
        rows = db_rows(self.db, "SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", (dag_id, run_id))
        return str(rows[0][0]) if rows else "none"

    def wait_until_ended(self, dag_id: str, run_id: str, timeout: float) -> str:
        """Wait until the run has succeeded or failed (every component still running); its state."""

        def ended() -> str | None:
            self.deployment.check_alive()
            state = self.state(dag_id, run_id)
            return state if state in ("success", "failed") else None

        return wait_for(f"run {run_id} to end", ended, timeout, every=1)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        rows = db_rows(
            self.db,
            "SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
            (dag_id, run_id),
        )
        return {str(task_id): str(state) for task_id, state in rows}

    def links(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links"
        return dict(self.deployment.api("GET", path)["extra_links"])
