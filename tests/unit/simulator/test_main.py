"""``python -m airflow_provider_chamelaion.simulator``: every option explained in ``--help``, parsed, and
refused with a message when malformed; a simulator started from the command line serves the API."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import pytest
import requests

from airflow_provider_chamelaion.simulator.__main__ import parse_args
from airflow_provider_chamelaion.simulator.process import free_port
from tests.harness.constants import ROOT
from tests.harness.processes import wait_until_listening
from tests.harness.simulator import TIMEOUT, VALID_BODY


def test_every_option_has_a_description(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parsers: list[argparse.ArgumentParser] = []
    original = argparse.ArgumentParser.parse_args

    def recording_parse_args(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> object:
        parsers.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", recording_parse_args)
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    assert exit_info.value.code == 0
    [parser] = parsers
    options = [action for action in parser._actions if action.option_strings]
    assert {"--host", "--port", "--output-url-ttl", "--seed", "--api-key"} <= {
        name for action in options for name in action.option_strings
    }
    undescribed = [action.option_strings[-1] for action in options if not (action.help or "").strip()]
    assert undescribed == []
    shown = capsys.readouterr().out
    assert "address to listen on" in shown
    assert "seconds a signed output_url stays valid" in shown


def test_cli_parses_phases_and_faults() -> None:
    args = parse_args(
        [
            "--phases",
            "queued=1,running=2.5",
            "--fault",
            "status:503x3",
            "--fault",
            "status:429@/requests/x2",
            "--fault",
            "drop",
        ]
    )
    assert args.phases == (("queued", 1.0), ("running", 2.5))
    assert [(f.kind, f.status, f.path, f.times) for f in args.fault] == [
        ("status", 503, None, 3),
        ("status", 429, "/requests/", 2),
        ("drop", 503, None, 1),
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["--phases", "queued"],
        ["--phases", "queued=soon"],
        ["--fault", "explode"],
        ["--fault", "status:abc"],
        ["--fault", "slow,speed=5"],
        ["--fault", "slow,delay=soon"],
    ],
)
def test_cli_rejects_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    assert "error" in capsys.readouterr().err


def test_cli_fault_path_may_contain_an_x() -> None:
    """Only an ``x`` followed by digits at the very end is a count (it once swallowed any ``x``)."""
    [inbox, counted] = parse_args(["--fault", "drop@/inbox", "--fault", "drop@/inboxx3"]).fault
    assert (inbox.kind, inbox.path, inbox.times) == ("drop", "/inbox", 1)
    assert (counted.path, counted.times) == ("/inbox", 3)


def test_cli_fault_options() -> None:
    faults = parse_args(
        [
            "--fault",
            "status:429,retry_after=2@/requests/x2",
            "--fault",
            "slow,delay=5",
            "--fault",
            "truncate,cut_at=1000@/outputs/",
            "--fault",
            "drop_after,method=POST@/generate",
        ]
    ).fault
    assert [(f.kind, f.status, f.retry_after, f.path, f.times) for f in faults[:1]] == [
        ("status", 429, "2", "/requests/", 2)
    ]
    assert (faults[1].kind, faults[1].delay, faults[1].path) == ("slow", 5.0, None)
    assert (faults[2].kind, faults[2].cut_at, faults[2].path) == ("truncate", 1000, "/outputs/")
    assert (faults[3].kind, faults[3].method, faults[3].path) == ("drop_after", "POST", "/generate")


def test_cli_runs_a_simulator_with_a_scripted_fault(tmp_path) -> None:
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_chamelaion.simulator",
            "--port",
            str(port),
            "--api-key",
            "K",
            "--phases",
            "queued=0.1,running=0.1",
            "--fault",
            "status:503x1",
        ],
        cwd=ROOT,
        env={**os.environ, "AIRFLOW_HOME": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait for the socket, not for an HTTP answer: the unscoped scripted 503 matches every path,
        # /healthz included, and the first HTTP call must be the one that meets it.
        wait_until_listening(port, "the simulator", process)
        headers = {"x-api-key": "K"}

        first = requests.get(f"{origin}/api/v1/lipsync/requests", headers=headers, timeout=TIMEOUT)
        assert first.status_code == 503
        assert "message" in first.json()

        assert requests.get(f"{origin}/healthz", timeout=TIMEOUT).json() == {"status": "ok"}
        assert (
            requests.get(f"{origin}/api/v1/lipsync/requests", headers={}, timeout=TIMEOUT).status_code == 401
        )
        created = requests.post(
            f"{origin}/api/v1/lipsync/generate", json=VALID_BODY, headers=headers, timeout=TIMEOUT
        )
        assert created.status_code == 200
        request_id = created.json()["request_id"]

        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline:
            status = requests.get(
                f"{origin}/api/v1/lipsync/requests/{request_id}", headers=headers, timeout=TIMEOUT
            ).json()["status"]
            if status == "completed":
                break
            time.sleep(0.05)
        assert status == "completed"

        jobs = requests.get(f"{origin}/_simulator/jobs", timeout=TIMEOUT).json()
        assert jobs["total"] == 1
    finally:
        process.terminate()
        try:
            stdout, _ = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, _ = process.communicate()
    assert f"base URL http://127.0.0.1:{port}/api" in stdout


@pytest.mark.parametrize(
    ("argv", "seconds"),
    [
        (["--clock-offset", "-8h"], -8 * 3600.0),
        (["--clock-offset=+30d"], 30 * 86400.0),
        (["--clock-offset", "-1y"], -365 * 86400.0),
        (["--clock-offset", "90"], 90.0),
        (["--clock-offset", "-2w", "--port", "0"], -14 * 86400.0),
        ([], 0.0),
    ],
)
def test_cli_clock_offset(argv: list[str], seconds: float) -> None:
    assert parse_args(argv).clock_offset == seconds


@pytest.mark.parametrize("value", ["8 hours", "h", "-1.5x", ""])
def test_cli_rejects_a_bad_clock_offset(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args([f"--clock-offset={value}"])
    assert "clock offset" in capsys.readouterr().err
