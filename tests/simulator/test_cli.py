"""``python -m airflow_provider_chamelaion.simulator --help`` explains every option."""

from __future__ import annotations

import argparse

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
