"""What an operator or sensor logged, on every Airflow line: Airflow 3's task loggers are structlog
loggers, Airflow 2's are standard ``logging`` loggers."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping

import pytest
import structlog


@contextlib.contextmanager
def logged_text(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> Iterator[list[str]]:
    """The log lines (rendered, at ``level`` or above) emitted in the block, through either logging stack."""
    lines: list[str] = []
    with structlog.testing.capture_logs() as entries, caplog.at_level(level):
        yield lines
    lines.extend(str(entry) for entry in entries if _level(entry) >= level)
    lines.extend(record.getMessage() for record in caplog.records if record.levelno >= level)


def _level(entry: Mapping[str, object]) -> int:
    number = logging.getLevelName(str(entry.get("log_level", "info")).upper())
    return number if isinstance(number, int) else logging.INFO


@contextlib.contextmanager
def logged_messages(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> Iterator[list[str]]:
    """Like :func:`logged_text`, but each line is the message alone (structlog's ``event``, which
    Airflow's loggers format %-style; a record's ``getMessage()``) logged in the block."""
    lines: list[str] = []
    before = len(caplog.records)
    with structlog.testing.capture_logs() as entries, caplog.at_level(level):
        yield lines
    lines.extend(str(entry["event"]) for entry in entries if _level(entry) >= level)
    lines.extend(record.getMessage() for record in caplog.records[before:] if record.levelno >= level)
