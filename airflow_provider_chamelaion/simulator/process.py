"""The simulator in a subprocess on a free loopback port: for tests, benchmarks, demos and your own DAG
tests, whenever the code under test runs in other processes (``airflow dags test``, a scheduler).

Example::

    with SimulatorProcess(["--phases", "queued=2,running=3"]) as sim:
        os.environ["AIRFLOW_CONN_CHAMELAION_DEFAULT"] = sim.connection_json()
        ...

For a simulator on a thread of the current process (state and call log in reach), use
:class:`~airflow_provider_chamelaion.simulator.server.Simulator` instead.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

_S = TypeVar("_S", bound="SimulatorProcess")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, *, seconds: float = 60.0, process: subprocess.Popen[Any] | None = None) -> None:
    """Wait until ``url`` answers 200 (a health check); raise if ``seconds`` pass or ``process`` exits."""
    deadline = time.monotonic() + seconds
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process serving {url} exited early (code {process.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - a loopback URL we built
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class SimulatorProcess:
    """``python -m airflow_provider_chamelaion.simulator`` on a free loopback port, until the block ends.

    :param args: more command-line arguments (``--phases``, ``--post-rate-limit``, ...: see ``--help``).
    :param api_key: the key clients must send.
    :param log: where the simulator's output goes (default: discarded).
    :param env: the subprocess's environment (default: this process's).
    :param cwd: its working directory.
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        api_key: str = "sim-key",
        log: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.args = list(args)
        self.api_key = api_key
        self.log = log
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The API's base URL, as a connection's host takes it."""
        return f"{self.origin}/api"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the simulator is not running")
        return self._process.pid

    def connection_json(self) -> str:
        """An ``AIRFLOW_CONN_...`` value (JSON form) for this simulator."""
        return json.dumps({"conn_type": "chamelaion", "host": self.base_url, "password": self.api_key})

    def start(self: _S) -> _S:
        self.port = free_port()
        command = [
            sys.executable,
            "-m",
            "airflow_provider_chamelaion.simulator",
            "--port",
            str(self.port),
            "--api-key",
            self.api_key,
            *self.args,
        ]
        self._log_file = self.log.open("wb") if self.log is not None else None
        self._process = subprocess.Popen(  # noqa: S603 - our own module, by the running interpreter
            command,
            env=self.env,
            cwd=self.cwd,
            stdout=self._log_file or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until_up(f"{self.origin}/healthz", process=self._process)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One JSON call to the simulator with the key (set-up and checks, e.g. ``/_simulator/jobs``)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - a loopback URL we built
            self.origin + path,
            data=data,
            method=method,
            headers={"x-api-key": self.api_key, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.loads(response.read())


__all__ = ["SimulatorProcess", "free_port", "wait_until_up"]
