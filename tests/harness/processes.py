"""Other processes in tests: a child interpreter and how it answers, a server's port coming up.

The child-process protocol: the test runs a script or ``-c`` code in a fresh interpreter (what matters
there is what that process imports, loads or allocates) with :func:`run_python`; the child prints its
result as one line ``ANSWER <json>``, which :func:`answer` reads. A child that exits non-zero fails the
test with the end of its output.

The simulator in a subprocess is ``airflow_provider_chamelaion.simulator.process.SimulatorProcess``
(with ``free_port`` and ``wait_until_up``, its health-check wait); :func:`wait_until_listening` is for a
server that has no health check to ask, or must not be asked yet.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.harness.constants import ROOT

#: What starts the one line of a child's output that holds its result.
ANSWER = "ANSWER "


def run_python(
    *args: str, env: Mapping[str, str] | None = None, timeout: float, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """``python *args`` run to its end in ``cwd``; fails the test unless it exited 0."""
    result = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, (
        f"the child exited with {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    )
    return result


def answer_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one ``ANSWER`` line the child printed, as printed."""
    [line] = [line for line in result.stdout.splitlines() if line.startswith(ANSWER)]
    return line


def answer(result: subprocess.CompletedProcess[str]) -> Any:
    """The result the child printed on its ``ANSWER`` line."""
    return json.loads(answer_line(result).removeprefix(ANSWER))


def wait_until_listening(
    port: int, what: str, process: subprocess.Popen[Any] | None = None, *, seconds: float = 60.0
) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``; raise if ``process`` exits first
    or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            piped = process.stdout is not None or process.stderr is not None
            output = f": {process.communicate(timeout=5)}" if piped else ""
            raise RuntimeError(f"{what} exited with {process.returncode}{output}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port} in {seconds} s")
