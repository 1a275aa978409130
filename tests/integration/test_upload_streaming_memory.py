"""Uploading a large file does not load it into memory.

A ~400 MB video is uploaded by ``ChamelaionHook.generate_with_media`` in a fresh interpreter
(tests/integration/children/upload_child.py) and that process's peak RSS growth is measured. As a control, the same
upload through requests' own ``files=`` (which builds the body in memory) is measured the same way, to
show the measurement does see buffering when there is some.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_chamelaion.simulator import Simulator
from tests.harness.processes import answer, run_python

pytestmark = pytest.mark.slow

CHILD = Path(__file__).resolve().parent / "children" / "upload_child.py"
MIB = 1 << 20
VIDEO_SIZE = 400 * MIB + 12345  # not a multiple of the 1 MiB upload chunk
AUDIO_SIZE = 200 * 1024 + 7
STREAMING_LIMIT_KIB = 64 * 1024
BUFFERING_FLOOR_KIB = 300 * 1024


def write_sparse_video(path: Path, size: int) -> None:
    """A real file of ``size`` bytes: data at both ends, zeros (a hole where the file system allows) between."""
    head = bytes(range(256)) * (MIB // 256)
    tail = b"chamelaion-end" * 100
    with path.open("wb") as handle:
        for _ in range(4):
            handle.write(head)
        handle.seek(size - len(tail))
        handle.write(tail)
    assert path.stat().st_size == size


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("media")
    video, audio = folder / "episode.mp4", folder / "dub.wav"
    write_sparse_video(video, VIDEO_SIZE)
    audio.write_bytes(b"RIFF" + os.urandom(AUDIO_SIZE - 4))
    return video, audio


def run_child(
    mode: str, simulator: Simulator, media: tuple[Path, Path], airflow_home: Path
) -> dict[str, Any]:
    video, audio = media
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW_CONN_CHAMELAION_DEFAULT": simulator.connection_json(),
        "PYTHONUNBUFFERED": "1",
    }
    report: dict[str, Any] = answer(
        run_python(str(CHILD), mode, str(video), str(audio), env=env, timeout=300)
    )
    assert report["mode"] == mode
    return report


def test_hook_upload_streams_and_requests_files_control_buffers(
    simulator: Simulator, media: tuple[Path, Path], tmp_path: Path
) -> None:
    state = simulator.state
    small = {"video": AUDIO_SIZE, "audio": AUDIO_SIZE}  # each child's warm-up upload
    big = {"video": VIDEO_SIZE, "audio": AUDIO_SIZE}

    streamed = run_child("hook", simulator, media, tmp_path / "airflow-hook")

    assert state.uploads == [small, big], "the simulator must have received every byte of both files"
    assert streamed["request_id"] in state.jobs
    assert state.jobs[streamed["request_id"]].inputs == big
    assert streamed["growth_kib"] < STREAMING_LIMIT_KIB, (
        f"the hook's upload of {VIDEO_SIZE // MIB} MiB grew peak RSS by {streamed['growth_kib'] / 1024:.1f} MiB"
    )

    control = run_child("requests-files", simulator, media, tmp_path / "airflow-control")

    assert state.uploads == [small, big, small, big]
    assert control["request_id"] in state.jobs
    assert control["growth_kib"] > BUFFERING_FLOOR_KIB, (
        "the control (requests' files=, which buffers the whole body) grew peak RSS by only "
        f"{control['growth_kib'] / 1024:.1f} MiB: the measurement cannot tell buffering from streaming"
    )
    print(
        f"\npeak RSS growth uploading {VIDEO_SIZE / MIB:.0f} MiB: hook {streamed['growth_kib'] / 1024:.1f} MiB "
        f"(before {streamed['before_kib'] / 1024:.1f} MiB); requests files= "
        f"{control['growth_kib'] / 1024:.1f} MiB (before {control['before_kib'] / 1024:.1f} MiB)"
    )
