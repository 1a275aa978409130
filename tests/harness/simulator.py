"""The in-process simulator (``conftest``'s ``simulator`` fixture) in tests: waiting until it is idle, its
API called over HTTP with ``requests``, a configuration like the fixture's, and a clock moved by hand."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

import requests

from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig
from tests.harness.constants import API_KEY

TIMEOUT = (5.0, 30.0)
KEY = {"x-api-key": API_KEY}
VIDEO_URL = "https://cdn.example.com/episodes/42.mp4"
AUDIO_URL = "https://cdn.example.com/dubs/42-ja.wav"
VIDEO = {"type": "video", "url": VIDEO_URL}
AUDIO = {"type": "audio", "url": AUDIO_URL}
VALID_BODY: dict[str, Any] = {"inputs": [VIDEO, AUDIO]}
#: The conftest simulator's phases: queued for 0.2 s, then running for 0.3 s.
QUEUED, RUNNING = 0.2, 0.3


def idle(simulator: Simulator) -> Simulator:
    """``simulator``, once every call made so far has been answered (statuses final)."""
    simulator.state.wait_idle()
    return simulator


def api(sim: Simulator, path: str) -> str:
    """The URL of ``path`` under the lip-sync API (``/generate``, ``/requests``, ...)."""
    return f"{sim.base_url}/v1/lipsync{path}"


def post_generate(
    sim: Simulator, body: Any = VALID_BODY, headers: dict[str, str] | None = None
) -> requests.Response:
    return requests.post(
        api(sim, "/generate"), json=body, headers=KEY if headers is None else headers, timeout=TIMEOUT
    )


def get_request(sim: Simulator, id_or_reference: str) -> requests.Response:
    return requests.get(
        api(sim, f"/requests/{quote(id_or_reference, safe='')}"), headers=KEY, timeout=TIMEOUT
    )


def list_requests(sim: Simulator, **params: Any) -> requests.Response:
    return requests.get(api(sim, "/requests"), params=params, headers=KEY, timeout=TIMEOUT)


def new_job(sim: Simulator, reference_id: str | None = None) -> str:
    """A job created in the simulator's state directly (no HTTP call); its id."""
    return sim.state.create_job(reference_id=reference_id, source="urls", inputs={}).id


def parse_time(value: str) -> datetime:
    """A time as the API writes it (ISO 8601, ``Z``)."""
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def make_config(**overrides: Any) -> SimulatorConfig:
    """The ``simulator`` fixture's configuration (phases QUEUED, RUNNING), with ``overrides``."""
    settings: dict[str, Any] = {
        "api_key": API_KEY,
        "phases": (("queued", QUEUED), ("running", RUNNING)),
        "output_size": 64 * 1024,
    }
    settings.update(overrides)
    return SimulatorConfig(**settings)


class FakeClock:
    """Stands in for the simulator's monotonic clock; tests move it forward by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def fake_clock(sim: Simulator) -> FakeClock:
    """Put a :class:`FakeClock` in place of ``sim``'s clock."""
    clock = FakeClock()
    sim.state.clock = clock
    return clock


class JobPins:
    """Holds each job the simulator has created at ``running``, whatever its clock says, until released:
    the test decides when the jobs may finish (e.g. only once a restarted triggerer polls them)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.jobs: set[str] = set()

    def pin_new(self) -> None:
        """Pin every job created since the last call."""
        for job_id in list(self.sim.state.jobs):
            if job_id not in self.jobs:
                self.sim.state.force_status(job_id, "running")
                self.jobs.add(job_id)

    def release(self) -> None:
        """Let every pinned job go on by its clock (long over: they complete at once)."""
        with self.sim.state.lock:
            for job_id in self.jobs:
                self.sim.state.jobs[job_id].forced_status = None
