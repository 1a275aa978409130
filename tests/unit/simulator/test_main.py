"""``python -m airflow_provider_chamelaion.simulator --help`` explains every option."""

from __future__ import annotations

import argparse
import json
import os

import pytest

from airflow_provider_chamelaion.simulator.__main__ import parse_args


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


def test_the_simulator_runs_in_a_subprocess_on_a_free_port_until_the_block_ends() -> None:
    from airflow_provider_chamelaion.simulator.process import SimulatorProcess

    with SimulatorProcess(["--phases", "queued=0"], api_key="k-1") as sim:
        assert sim.call("GET", "/_simulator/jobs") == {"total": 0, "data": []}
        assert json.loads(sim.connection_json())["host"] == f"http://127.0.0.1:{sim.port}/api"
        pid = sim.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped and reaped
