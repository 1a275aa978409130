"""Fixtures of the hook tests (requests-mock based)."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook


@pytest.fixture
def hook(mock_hook: ChamelaionHook) -> ChamelaionHook:
    return mock_hook


@pytest.fixture
def media_files(tmp_path: Path) -> tuple[Path, Path]:
    video = tmp_path / "episode 42.mp4"
    audio = tmp_path / "dub.wav"
    video.write_bytes(b"VIDEO-" + bytes(range(256)) * 5)
    audio.write_bytes(b"AUDIO-" + b"\x01\x02" * 300)
    return video, audio
