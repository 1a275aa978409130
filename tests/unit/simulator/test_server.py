"""The local Chamelaion API simulator, exercised over real HTTP (``requests`` and the hook).

The simulator is what every other end-to-end test and the demo stand on, so it is held to the API
contract (shared/api) here: authentication, validation, the job lifecycle, outputs, listing, lookups,
uploads and each kind of injected fault, plus the command line.
"""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from airflow_provider_chamelaion.exceptions import ChamelaionTransportError
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
from airflow_provider_chamelaion.simulator import Fault, Simulator, SimulatorConfig
from airflow_provider_chamelaion.simulator.__main__ import parse_args
from airflow_provider_chamelaion.simulator.state import RANDOM_GET_FAULTS, SimulatorState
from tests.harness.constants import API_KEY
from tests.harness.simulator import (
    AUDIO,
    KEY,
    QUEUED,
    RUNNING,
    TIMEOUT,
    VALID_BODY,
    VIDEO,
    FakeClock,
    api,
    fake_clock,
    get_request,
    list_requests,
    new_job,
    parse_time,
    post_generate,
)


def upload_files(video: bytes = b"v" * 1000, audio: bytes = b"a" * 500) -> dict[str, tuple[str, bytes, str]]:
    return {"video": ("clip.mp4", video, "video/mp4"), "audio": ("dub.wav", audio, "audio/wav")}


def assert_error(response: requests.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["message"]
    assert isinstance(message, str)
    assert message
    return message


def completed_job(sim: Simulator, clock: FakeClock) -> dict[str, Any]:
    """A job created now and run to its end on ``clock``, as the API describes it."""
    job_id = new_job(sim)
    clock.advance(QUEUED + RUNNING + 1)
    response = get_request(sim, job_id)
    assert response.status_code == 200
    payload: dict[str, Any] = response.json()
    return payload


# -- authentication ----------------------------------------------------------------------------------


ROUTES = ["generate", "generate-with-media", "get-request", "list-requests"]


def call_route(sim: Simulator, route: str, headers: dict[str, str]) -> requests.Response:
    if route == "generate":
        return post_generate(sim, headers=headers)
    if route == "generate-with-media":
        return requests.post(
            api(sim, "/generate-with-media"), files=upload_files(), headers=headers, timeout=TIMEOUT
        )
    if route == "get-request":
        job_id = sim.state.listing(None)[-1].id
        return requests.get(api(sim, f"/requests/{job_id}"), headers=headers, timeout=TIMEOUT)
    assert route == "list-requests"
    return requests.get(api(sim, "/requests"), headers=headers, timeout=TIMEOUT)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-key"),
        pytest.param({"x-api-key": "sk-chmln-WRONG"}, id="wrong-key"),
        pytest.param({"x-api-key": ""}, id="empty-key"),
        pytest.param({"x-api-key": API_KEY + "x"}, id="key-with-suffix"),
        pytest.param({"Authorization": f"Bearer {API_KEY}"}, id="bearer-instead"),
    ],
)
def test_every_api_route_refuses_a_missing_or_wrong_key(
    simulator: Simulator, route: str, headers: dict[str, str]
) -> None:
    new_job(simulator, reference_id="existing")  # so a GET with the right key would find something

    response = call_route(simulator, route, headers)

    assert_error(response, 401)
    assert len(simulator.state.jobs) == 1, "a refused call must not create a job"
    assert simulator.state.uploads == []


@pytest.mark.parametrize("route", ROUTES)
def test_every_api_route_accepts_the_right_key(simulator: Simulator, route: str) -> None:
    """The control for the 401 test: the same calls with the key succeed (header name is case-blind)."""
    new_job(simulator, reference_id="existing")

    response = call_route(simulator, route, {"X-Api-Key": API_KEY})

    assert response.status_code == 200, response.text
    assert isinstance(response.json(), dict)


def test_calls_are_recorded_with_whether_they_carried_a_key(simulator: Simulator) -> None:
    assert post_generate(simulator).status_code == 200
    assert post_generate(simulator, headers={}).status_code == 401
    assert list_requests(simulator).status_code == 200

    calls = [(c.method, c.path, c.status, c.had_api_key, c.fault) for c in simulator.state.calls]
    assert calls == [
        ("POST", "/api/v1/lipsync/generate", 200, True, None),
        ("POST", "/api/v1/lipsync/generate", 401, False, None),
        ("GET", "/api/v1/lipsync/requests", 200, True, None),
    ]
    assert [c.status for c in simulator.state.calls_to("POST", r"/generate$")] == [200, 401]


# -- validation ---------------------------------------------------------------------------------------


BAD_GENERATE_BODIES: dict[str, Any] = {
    "only-video": {"inputs": [VIDEO]},
    "only-audio": {"inputs": [AUDIO]},
    "three-inputs": {"inputs": [VIDEO, AUDIO, AUDIO]},
    "no-inputs": {},
    "empty-inputs": {"inputs": []},
    "inputs-not-a-list": {"inputs": {"video": VIDEO["url"], "audio": AUDIO["url"]}},
    "two-videos": {"inputs": [VIDEO, {**VIDEO, "url": "https://cdn.example.com/other.mp4"}]},
    "two-audios": {"inputs": [AUDIO, {**AUDIO, "url": "https://cdn.example.com/other.wav"}]},
    "ftp-url": {"inputs": [{**VIDEO, "url": "ftp://cdn.example.com/42.mp4"}, AUDIO]},
    "file-url": {"inputs": [VIDEO, {**AUDIO, "url": "file:///data/42.wav"}]},
    "s3-url": {"inputs": [{**VIDEO, "url": "s3://bucket/42.mp4"}, AUDIO]},
    "relative-url": {"inputs": [{**VIDEO, "url": "/episodes/42.mp4"}, AUDIO]},
    "url-without-host": {"inputs": [{**VIDEO, "url": "https://"}, AUDIO]},
    "url-not-a-string": {"inputs": [{**VIDEO, "url": 42}, AUDIO]},
    "unknown-type": {"inputs": [{**VIDEO, "type": "image"}, AUDIO]},
    "input-without-url": {"inputs": [{"type": "video"}, AUDIO]},
    "input-with-extra-key": {"inputs": [{**VIDEO, "name": "episode"}, AUDIO]},
    "input-not-an-object": {"inputs": [VIDEO["url"], AUDIO]},
    "unknown-field": {**VALID_BODY, "webhook_url": "https://example.com/hook"},
    "detection-as-string": {**VALID_BODY, "disable_active_speaker_detection": "true"},
    "detection-as-int": {**VALID_BODY, "disable_active_speaker_detection": 1},
    "detection-null": {**VALID_BODY, "disable_active_speaker_detection": None},
    "reference-id-not-a-string": {**VALID_BODY, "reference_id": 42},
    "body-is-a-list": [VIDEO, AUDIO],
    "body-is-a-string": "inputs",
}


@pytest.mark.parametrize("body", list(BAD_GENERATE_BODIES.values()), ids=list(BAD_GENERATE_BODIES))
def test_generate_rejects_a_bad_body_with_422_and_a_message(simulator: Simulator, body: Any) -> None:
    assert_error(post_generate(simulator, body), 422)
    assert simulator.state.jobs == {}


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"not json", id="text"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"inputs": [', id="cut-short"),
        pytest.param(b"\xff\xfe\x00", id="not-utf8"),
    ],
)
def test_generate_rejects_a_body_that_is_not_json(simulator: Simulator, raw: bytes) -> None:
    response = requests.post(
        api(simulator, "/generate"),
        data=raw,
        headers={**KEY, "Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert "JSON" in assert_error(response, 422)
    assert simulator.state.jobs == {}


def test_generate_messages_name_the_problem(simulator: Simulator) -> None:
    assert "webhook_url" in assert_error(post_generate(simulator, BAD_GENERATE_BODIES["unknown-field"]), 422)
    assert "disable_active_speaker_detection" in assert_error(
        post_generate(simulator, BAD_GENERATE_BODIES["detection-as-string"]), 422
    )
    assert "url" in assert_error(post_generate(simulator, BAD_GENERATE_BODIES["ftp-url"]), 422)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(VALID_BODY, id="video-then-audio"),
        pytest.param({"inputs": [AUDIO, VIDEO]}, id="audio-then-video"),
        pytest.param(
            {**VALID_BODY, "disable_active_speaker_detection": True, "reference_id": "dub-42"},
            id="all-fields",
        ),
        pytest.param({**VALID_BODY, "disable_active_speaker_detection": False}, id="detection-false"),
        pytest.param({"inputs": [{**VIDEO, "url": "http://cdn.example.com:8080/42.mp4"}, AUDIO]}, id="http"),
    ],
)
def test_generate_accepts_a_valid_body(simulator: Simulator, body: Any) -> None:
    response = post_generate(simulator, body)

    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["status"] == "success"
    job = simulator.state.jobs[payload["request_id"]]
    assert job.reference_id == body.get("reference_id")
    assert job.inputs == {item["type"]: item["url"] for item in body["inputs"]}


def _post_media(sim: Simulator, **kwargs: Any) -> requests.Response:
    return requests.post(api(sim, "/generate-with-media"), timeout=TIMEOUT, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        pytest.param({"files": {"video": ("v.mp4", b"v" * 10, "video/mp4")}}, "audio", id="missing-audio"),
        pytest.param({"files": {"audio": ("a.wav", b"a" * 10, "audio/wav")}}, "video", id="missing-video"),
        pytest.param({"files": upload_files(audio=b"")}, "audio", id="empty-audio"),
        pytest.param({"files": upload_files(video=b"")}, "video", id="empty-video"),
        pytest.param({"files": {"clip": ("v.mp4", b"v"), "dub": ("a.wav", b"a")}}, "video", id="wrong-names"),
        pytest.param({"json": VALID_BODY}, "multipart", id="json-not-multipart"),
        pytest.param({"data": {"video": "v", "audio": "a"}}, "multipart", id="urlencoded-form"),
        pytest.param(
            {"data": b"--x\r\n", "headers": {"Content-Type": "multipart/form-data"}},
            "boundary",
            id="no-boundary",
        ),
        pytest.param({}, "multipart", id="no-body"),
    ],
)
def test_generate_with_media_rejects_a_bad_upload_with_422(
    simulator: Simulator, kwargs: dict[str, Any], named: str
) -> None:
    kwargs = {**kwargs, "headers": {**KEY, **kwargs.get("headers", {})}}

    message = assert_error(_post_media(simulator, **kwargs), 422)

    assert named in message
    assert simulator.state.jobs == {}
    assert simulator.state.uploads == []


def test_generate_with_media_rejects_a_malformed_multipart_body(simulator: Simulator) -> None:
    response = _post_media(
        simulator,
        data=b"this is not a multipart body at all",
        headers={**KEY, "Content-Type": "multipart/form-data; boundary=abc123"},
    )
    assert_error(response, 422)
    assert simulator.state.jobs == {}


# -- uploads ------------------------------------------------------------------------------------------


def test_upload_sizes_are_recorded_exactly_even_with_boundary_lookalikes(simulator: Simulator) -> None:
    tricky = b"\r\n--\r\n--" * 5000 + b"\r\n" + bytes(range(256)) * 40 + b"\r\n--"
    audio = b"RIFF" + b"\r" * 3333

    response = _post_media(simulator, files=upload_files(video=tricky, audio=audio), headers=KEY)

    assert response.status_code == 200, response.text
    assert simulator.state.uploads == [{"video": len(tricky), "audio": len(audio)}]
    job = simulator.state.jobs[response.json()["request_id"]]
    assert job.source == "upload"
    assert job.inputs == {"video": len(tricky), "audio": len(audio)}


def test_hook_upload_is_recorded_with_exact_sizes(
    simulator: Simulator, sim_hook: ChamelaionHook, tmp_path
) -> None:
    video, audio = tmp_path / "episode.mp4", tmp_path / "dub.wav"
    video.write_bytes(os.urandom(3 * (1 << 20) + 17))
    audio.write_bytes(os.urandom(12345))

    request_id = sim_hook.generate_with_media(video, audio)

    assert simulator.state.uploads == [{"video": 3 * (1 << 20) + 17, "audio": 12345}]
    assert request_id in simulator.state.jobs


def test_uploads_are_consumed_streaming_not_buffered(simulator: Simulator) -> None:
    """A 48 MiB chunked upload must not make the server hold the body: traced peak stays far below it."""
    boundary = "streamingboundary7f3a"
    chunk = b"\x00" * (1 << 20)
    chunks = 48

    def body() -> Iterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="v.mp4"\r\n'
            "Content-Type: video/mp4\r\n\r\n"
        ).encode()
        for _ in range(chunks):
            yield chunk  # the same object every time: the client side allocates nothing per chunk
        yield (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n'
            f"Content-Type: audio/wav\r\n\r\nRIFFdata\r\n--{boundary}--\r\n"
        ).encode()

    tracemalloc.start()
    try:
        response = _post_media(
            simulator,
            data=body(),  # a generator: sent with Transfer-Encoding: chunked, no Content-Length
            headers={**KEY, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert response.status_code == 200, response.text
    assert simulator.state.uploads == [{"video": chunks * len(chunk), "audio": 8}]
    assert peak < 12 * (1 << 20), f"traced peak {peak / (1 << 20):.1f} MiB for a 48 MiB upload"


# -- lifecycle ----------------------------------------------------------------------------------------


def test_lifecycle_queued_running_completed_on_the_simulator_clock(
    simulator: Simulator, clock: FakeClock
) -> None:
    request_id = post_generate(simulator, {**VALID_BODY, "reference_id": "ep-42"}).json()["request_id"]

    queued = get_request(simulator, request_id).json()
    assert queued["status"] == "queued"
    assert queued["id"] == request_id
    assert queued["reference_id"] == "ep-42"
    assert {"started_at", "finished_at", "output_url", "error_message"}.isdisjoint(queued)

    clock.advance(QUEUED / 2)
    assert get_request(simulator, request_id).json()["status"] == "queued"

    clock.advance(QUEUED)  # 1.5 x QUEUED since creation: running
    running = get_request(simulator, request_id).json()
    assert running["status"] == "running"
    assert "started_at" in running
    assert {"finished_at", "output_url", "error_message"}.isdisjoint(running)

    clock.advance(RUNNING)  # QUEUED + RUNNING + a bit: completed
    completed = get_request(simulator, request_id).json()
    assert completed["status"] == "completed"
    assert "error_message" not in completed
    assert completed["output_url"].startswith(simulator.origin + "/outputs/")

    created = parse_time(completed["created_at"])
    started = parse_time(completed["started_at"])
    finished = parse_time(completed["finished_at"])
    assert started - created == timedelta(seconds=QUEUED)
    assert finished - created == timedelta(seconds=QUEUED + RUNNING)
    assert completed["created_at"] == queued["created_at"]
    assert completed["started_at"] == running["started_at"]

    clock.advance(3600)
    assert get_request(simulator, request_id).json()["status"] == "completed", "a finished job stays finished"


def test_lifecycle_follows_the_configured_phases(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(phases=(("queued", 5.0), ("preprocessing", 5.0), ("rendering", 5.0)))
    clock = fake_clock(sim)
    job_id = new_job(sim)

    seen = []
    for _ in range(5):
        seen.append(get_request(sim, job_id).json()["status"])
        clock.advance(4.0)
    assert seen == ["queued", "queued", "preprocessing", "rendering", "completed"]


def test_lifecycle_on_the_real_clock(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(phases=(("queued", 0.05), ("running", 0.05)))
    request_id = post_generate(sim).json()["request_id"]

    statuses = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        statuses.append(get_request(sim, request_id).json()["status"])
        if statuses[-1] == "completed":
            break
        time.sleep(0.02)

    assert statuses[-1] == "completed"
    assert set(statuses) <= {"queued", "running", "completed"}


def test_fail_next_makes_exactly_the_next_jobs_fail(simulator: Simulator, clock: FakeClock) -> None:
    simulator.state.fail_next(2)
    ids = [post_generate(simulator).json()["request_id"] for _ in range(3)]
    clock.advance(QUEUED + RUNNING + 1)

    first, second, third = (get_request(simulator, request_id).json() for request_id in ids)

    for failed in (first, second):
        assert failed["status"] == "failed"
        assert failed["error_message"] == simulator.config.failure_message
        assert "output_url" not in failed
        assert "finished_at" in failed
    assert third["status"] == "completed"
    assert "error_message" not in third


def test_failure_rate_one_fails_every_job(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(failure_rate=1.0, failure_message="Lip sync failed: audio is silent")
    clock = fake_clock(sim)
    ids = [post_generate(sim).json()["request_id"] for _ in range(4)]

    assert {get_request(sim, request_id).json()["status"] for request_id in ids} == {"queued"}
    clock.advance(QUEUED + RUNNING + 1)
    for request_id in ids:
        payload = get_request(sim, request_id).json()
        assert payload["status"] == "failed"
        assert payload["error_message"] == "Lip sync failed: audio is silent"
        assert "output_url" not in payload


def test_force_status_to_a_status_the_client_does_not_know(simulator: Simulator, clock: FakeClock) -> None:
    job_id = new_job(simulator)
    simulator.state.force_status(job_id, "upscaling")
    clock.advance(QUEUED + RUNNING + 1)  # the forced status wins over the clock

    payload = get_request(simulator, job_id).json()
    assert payload["status"] == "upscaling"
    assert {"finished_at", "output_url", "error_message"}.isdisjoint(payload)
    assert list_requests(simulator).json()["data"][0]["status"] == "upscaling"

    simulator.state.force_status(job_id, "failed", error_message="Lip sync failed: quota exceeded")
    payload = get_request(simulator, job_id).json()
    assert payload["status"] == "failed"
    assert payload["error_message"] == "Lip sync failed: quota exceeded"
    assert "output_url" not in payload


# -- outputs ------------------------------------------------------------------------------------------


def test_output_is_served_with_the_configured_size(make_simulator: Callable[..., Simulator]) -> None:
    size = 3 * (1 << 20) + 4321  # more than one 1 MiB block, and not a multiple of it
    sim = make_simulator(output_size=size)
    payload = completed_job(sim, fake_clock(sim))

    response = requests.get(payload["output_url"], timeout=TIMEOUT)

    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(size)
    assert response.headers["content-type"] == "video/mp4"
    assert len(response.content) == size
    assert response.content.startswith(f"chamelaion-simulated-output:{payload['id']}:".encode())


def test_empty_output_next_makes_exactly_the_next_outputs_empty(
    simulator: Simulator, clock: FakeClock
) -> None:
    simulator.state.empty_output_next(1)
    empty, full = completed_job(simulator, clock), completed_job(simulator, clock)

    answers = [requests.get(payload["output_url"], timeout=TIMEOUT) for payload in (empty, full)]

    assert [payload["status"] for payload in (empty, full)] == ["completed", "completed"]
    assert [answer.status_code for answer in answers] == [200, 200]
    assert [answer.headers["Content-Length"] for answer in answers] == ["0", str(64 * 1024)]
    assert [len(answer.content) for answer in answers] == [0, 64 * 1024]


def test_empty_output_rate_one_empties_every_output(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(empty_output_rate=1.0)
    clock = fake_clock(sim)
    payloads = [completed_job(sim, clock) for _ in range(3)]

    assert [requests.get(p["output_url"], timeout=TIMEOUT).content for p in payloads] == [b"", b"", b""]


def test_cli_empty_output_rate_reaches_the_config() -> None:
    assert parse_args(["--empty-output-rate", "0.25"]).empty_output_rate == 0.25
    assert parse_args([]).empty_output_rate == 0.0


def test_output_needs_no_api_key_but_a_valid_signature(simulator: Simulator, clock: FakeClock) -> None:
    payload = completed_job(simulator, clock)
    url = payload["output_url"]
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    assert set(query) == {"expires", "sig"}
    base = f"{parts.scheme}://{parts.netloc}{parts.path}"

    assert requests.get(url, timeout=TIMEOUT).status_code == 200
    flipped = query["sig"][:-1] + ("0" if query["sig"][-1] != "0" else "1")
    tampered = [
        {**query, "sig": flipped},
        {**query, "expires": str(int(query["expires"]) + 3600)},  # extend the URL's life
        {"expires": query["expires"]},
        {},
    ]
    for params in tampered:
        response = requests.get(f"{base}?{urlencode(params)}", timeout=TIMEOUT)
        assert_error(response, 403)

    other = completed_job(simulator, clock)
    other_query = urlsplit(other["output_url"]).query
    assert_error(requests.get(f"{base}?{other_query}", timeout=TIMEOUT), 403)  # another job's signature


def test_output_url_expires(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(output_url_ttl=-5)  # already expired when handed out
    payload = completed_job(sim, fake_clock(sim))

    assert "expired" in assert_error(requests.get(payload["output_url"], timeout=TIMEOUT), 403)


def test_output_base_url_is_used_for_output_urls(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(output_base_url="https://storage.chamelaion.test/")
    payload = completed_job(sim, fake_clock(sim))
    assert payload["output_url"].startswith(f"https://storage.chamelaion.test/outputs/{payload['id']}.mp4?")


def test_no_output_for_unknown_or_unfinished_jobs(simulator: Simulator, clock: FakeClock) -> None:
    query = urlsplit(completed_job(simulator, clock)["output_url"]).query  # a valid-looking signature
    running_id = new_job(simulator)
    simulator.state.fail_next()
    failed_id = new_job(simulator)
    clock.advance(QUEUED + RUNNING + 1)
    simulator.state.force_status(running_id, "running")

    for job_id in ("00000000-0000-0000-0000-000000000000", running_id, failed_id):
        response = requests.get(f"{simulator.origin}/outputs/{job_id}.mp4?{query}", timeout=TIMEOUT)
        assert_error(response, 404)


# -- listing and lookup -------------------------------------------------------------------------------


@pytest.fixture
def five_jobs(simulator: Simulator) -> list[str]:
    """Five jobs, oldest first; reference_ids a, b, a, None, a."""
    return [new_job(simulator, reference) for reference in ("a", "b", "a", None, "a")]


def test_list_returns_every_job_newest_first_with_the_total(
    simulator: Simulator, five_jobs: list[str]
) -> None:
    payload = list_requests(simulator).json()

    assert [item["id"] for item in payload["data"]] == five_jobs[::-1]
    assert payload["pagination"] == {"limit": 20, "offset": 0, "total": 5}


def test_list_pages_with_limit_and_offset(simulator: Simulator, five_jobs: list[str]) -> None:
    newest_first = five_jobs[::-1]
    collected = []
    for offset in (0, 2, 4):
        payload = list_requests(simulator, limit=2, offset=offset).json()
        assert payload["pagination"] == {"limit": 2, "offset": offset, "total": 5}
        collected += [item["id"] for item in payload["data"]]
    assert collected == newest_first

    past_the_end = list_requests(simulator, limit=2, offset=7).json()
    assert past_the_end["data"] == []
    assert past_the_end["pagination"]["total"] == 5


def test_list_filters_by_exact_reference_id(simulator: Simulator, five_jobs: list[str]) -> None:
    payload = list_requests(simulator, reference_id="a").json()
    assert [item["id"] for item in payload["data"]] == [five_jobs[4], five_jobs[2], five_jobs[0]]
    assert {item["reference_id"] for item in payload["data"]} == {"a"}
    assert payload["pagination"]["total"] == 3

    page = list_requests(simulator, reference_id="a", limit=1, offset=1).json()
    assert [item["id"] for item in page["data"]] == [five_jobs[2]]
    assert page["pagination"] == {"limit": 1, "offset": 1, "total": 3}

    for no_match in ("A", "a ", "c"):
        assert list_requests(simulator, reference_id=no_match).json()["pagination"]["total"] == 0


def test_list_clamps_the_page_size(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(max_page_size=3)
    for _ in range(5):
        new_job(sim)

    payload = list_requests(sim, limit=50).json()

    assert len(payload["data"]) == 3
    assert payload["pagination"] == {"limit": 3, "offset": 0, "total": 5}


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": -3}, {"offset": -1}, {"limit": "ten"}, {"offset": "1.5"}, {"limit": ""}],
    ids=["limit-0", "limit-negative", "offset-negative", "limit-word", "offset-fraction", "limit-empty"],
)
def test_list_rejects_bad_paging_with_422(simulator: Simulator, five_jobs: list[str], params: dict) -> None:
    assert_error(list_requests(simulator, **params), 422)


def test_get_request_by_reference_id_newest_wins(simulator: Simulator) -> None:
    first = post_generate(simulator, {**VALID_BODY, "reference_id": "dub-42"}).json()["request_id"]
    other = post_generate(simulator, {**VALID_BODY, "reference_id": "dub-43"}).json()["request_id"]
    newest = post_generate(simulator, {**VALID_BODY, "reference_id": "dub-42"}).json()["request_id"]

    assert get_request(simulator, "dub-42").json()["id"] == newest
    assert get_request(simulator, "dub-43").json()["id"] == other
    assert get_request(simulator, first).json()["id"] == first  # by UUID, the older one is still there
    assert [item["id"] for item in list_requests(simulator, reference_id="dub-42").json()["data"]] == [
        newest,
        first,
    ]


def test_get_request_by_a_reference_id_that_needs_escaping(simulator: Simulator) -> None:
    job_id = new_job(simulator, reference_id="ep 42:ja?v=2#final")
    assert get_request(simulator, "ep 42:ja?v=2#final").json()["id"] == job_id


def test_get_request_unknown_id_is_404(simulator: Simulator, five_jobs: list[str]) -> None:
    assert_error(get_request(simulator, "00000000-0000-0000-0000-000000000000"), 404)
    assert_error(get_request(simulator, "no-such-reference"), 404)


# -- scripted faults ----------------------------------------------------------------------------------


def test_status_fault_answers_503_n_times_then_normally(simulator: Simulator) -> None:
    simulator.state.add_fault(kind="status", status=503, times=3, path="/requests")

    statuses = [list_requests(simulator).status_code for _ in range(4)]

    assert statuses == [503, 503, 503, 200]
    assert simulator.state.faults == []
    assert [c.fault for c in simulator.state.calls] == ["status"] * 3 + [None]
    assert [c.status for c in simulator.state.calls] == [503, 503, 503, 200]


def test_status_fault_429_with_retry_after_creates_no_job(simulator: Simulator) -> None:
    simulator.state.add_fault(kind="status", status=429, retry_after="7", method="POST", path="/generate$")

    assert list_requests(simulator).status_code == 200  # not a POST: untouched
    refused = post_generate(simulator)
    assert_error(refused, 429)
    assert refused.headers["Retry-After"] == "7"
    assert simulator.state.jobs == {}

    accepted = post_generate(simulator)
    assert accepted.status_code == 200
    assert list(simulator.state.jobs) == [accepted.json()["request_id"]]


def test_status_fault_with_a_custom_body(simulator: Simulator) -> None:
    simulator.state.add_fault(
        Fault("status", status=502, body="<html><h1>502 Bad Gateway</h1></html>", content_type="text/html")
    )
    response = list_requests(simulator)
    assert response.status_code == 502
    assert response.headers["content-type"] == "text/html"
    assert response.text == "<html><h1>502 Bad Gateway</h1></html>"


def test_hook_waits_out_a_429_and_creates_one_job(
    simulator: Simulator, sim_hook: ChamelaionHook, sleeps: list[float]
) -> None:
    simulator.state.add_fault(kind="status", status=429, retry_after="2", path="/generate$")

    request_id = sim_hook.generate(VIDEO["url"], AUDIO["url"])

    assert sleeps == [2.0]
    assert list(simulator.state.jobs) == [request_id]
    assert [c.status for c in simulator.state.calls_to("POST")] == [429, 200]


def test_drop_closes_the_connection_without_acting(simulator: Simulator) -> None:
    simulator.state.add_fault(kind="drop", path="/generate$")

    with pytest.raises(requests.exceptions.ConnectionError):
        post_generate(simulator)

    assert simulator.state.jobs == {}
    [call] = simulator.state.calls
    assert (call.method, call.status, call.fault) == ("POST", None, "drop")
    assert post_generate(simulator).status_code == 200  # the fault was used up


def test_drop_on_a_get(simulator: Simulator) -> None:
    job_id = new_job(simulator)
    simulator.state.add_fault(kind="drop", method="GET")

    with pytest.raises(requests.exceptions.ConnectionError):
        get_request(simulator, job_id)
    assert get_request(simulator, job_id).status_code == 200


def test_drop_after_acts_then_closes_the_connection(simulator: Simulator) -> None:
    simulator.state.add_fault(kind="drop_after", method="POST", path="/generate$")

    with pytest.raises(requests.exceptions.ConnectionError):
        post_generate(simulator, {**VALID_BODY, "reference_id": "paid-once"})

    [job] = simulator.state.jobs.values()
    assert job.reference_id == "paid-once"
    [call] = simulator.state.calls
    assert (call.status, call.fault) == (None, "drop_after")


def test_drop_after_on_generate_is_not_retried_by_the_hook(
    simulator: Simulator, sim_hook: ChamelaionHook
) -> None:
    simulator.state.add_fault(kind="drop_after", path="/generate$")

    with pytest.raises(ChamelaionTransportError) as raised:
        sim_hook.generate(VIDEO["url"], AUDIO["url"], reference_id="paid-once")

    assert raised.value.sent is True
    assert len(simulator.state.jobs) == 1
    assert len(simulator.state.calls_to("POST")) == 1


def test_slow_fault_delays_then_answers_normally(simulator: Simulator) -> None:
    job_id = new_job(simulator)
    simulator.state.add_fault(kind="slow", delay=2.0, path="/requests/")

    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(api(simulator, f"/requests/{job_id}"), headers=KEY, timeout=(5.0, 0.3))

    simulator.state.add_fault(kind="slow", delay=0.3, path="/requests/")
    response = get_request(simulator, job_id)
    assert response.status_code == 200
    assert response.json()["id"] == job_id
    # (the timed-out call is recorded only when its 2 s are up, so look for the answered one)
    assert ("slow", 200) in [(c.fault, c.status) for c in simulator.state.calls_to("GET")]


def test_malformed_fault_answers_200_with_a_body_that_is_not_json(simulator: Simulator) -> None:
    job_id = new_job(simulator)
    simulator.state.add_fault(kind="malformed", path="/requests/")

    response = get_request(simulator, job_id)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(ValueError):  # json's JSONDecodeError is a ValueError
        json.loads(response.content)
    assert get_request(simulator, job_id).json()["id"] == job_id


def drain(response: requests.Response) -> tuple[int, Exception | None]:
    """Read a streamed body to its end: (bytes received, the error that ended it early or None)."""
    received = 0
    try:
        for chunk in response.iter_content(64 * 1024):
            received += len(chunk)
    except requests.exceptions.RequestException as err:
        return received, err
    return received, None


def test_truncate_fault_cuts_an_output_short(make_simulator: Callable[..., Simulator]) -> None:
    size = 2 * (1 << 20)
    sim = make_simulator(output_size=size)
    payload = completed_job(sim, fake_clock(sim))
    sim.state.add_fault(kind="truncate", cut_at=100_000, path="^/outputs/")

    with requests.get(payload["output_url"], stream=True, timeout=TIMEOUT) as response:
        assert response.status_code == 200
        assert response.headers["Content-Length"] == str(size)
        received, error = drain(response)
    assert isinstance(error, requests.exceptions.RequestException), "a cut body must not end quietly"
    assert 0 < received <= 100_000

    full = requests.get(payload["output_url"], timeout=TIMEOUT)
    assert len(full.content) == size  # only the one call was cut


def test_fault_kinds_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault(kind="explode")


# -- random faults ------------------------------------------------------------------------------------


def test_random_faults_only_ever_429_a_post(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(fault_rate=1.0, seed=7)

    for _ in range(12):
        response = post_generate(sim)
        assert_error(response, 429)
        assert response.headers["Retry-After"] == "0"
    media = requests.post(
        api(sim, "/generate-with-media"), files=upload_files(), headers=KEY, timeout=TIMEOUT
    )
    assert_error(media, 429)

    assert sim.state.jobs == {}
    assert sim.state.uploads == []
    assert {(c.status, c.fault) for c in sim.state.calls} == {(429, "status")}


def test_random_fault_draws_for_posts_are_always_429() -> None:
    state = SimulatorState(SimulatorConfig(fault_rate=0.5, seed=3))
    drawn = [state.take_fault("POST", "/api/v1/lipsync/generate") for _ in range(400)]

    faults = [fault for fault in drawn if fault is not None]
    assert 0 < len(faults) < 400
    assert {(fault.kind, fault.status) for fault in faults} == {("status", 429)}


def test_random_faults_on_gets_cover_the_transient_range_but_not_outputs_or_healthz(
    make_simulator: Callable[..., Simulator],
) -> None:
    sim = make_simulator(fault_rate=1.0, seed=11)
    clock = fake_clock(sim)
    job_id = new_job(sim)

    outcomes: set[object] = set()
    for _ in range(25):
        try:
            outcomes.add(list_requests(sim).status_code)
        except requests.exceptions.ConnectionError:
            outcomes.add("dropped")
    assert outcomes <= {200, 429, 502, 503, "dropped"}  # 200 only after a slow answer
    assert len(outcomes) >= 3, outcomes
    assert {c.fault for c in sim.state.calls} <= {fault.kind for fault in RANDOM_GET_FAULTS}
    assert None not in {c.fault for c in sim.state.calls}

    calls_before = len(sim.state.calls)
    for _ in range(5):
        assert requests.get(f"{sim.origin}/healthz", timeout=TIMEOUT).status_code == 200
    clock.advance(QUEUED + RUNNING + 1)
    output_url = sim.state.describe(sim.state.jobs[job_id], sim.origin)["output_url"]
    assert isinstance(output_url, str)
    for _ in range(5):
        assert len(requests.get(output_url, timeout=TIMEOUT).content) == sim.config.output_size
    assert {c.fault for c in sim.state.calls[calls_before:]} == {None}


# -- the API's clock ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [-365 * 86400.0, -8 * 3600.0, 30 * 86400.0], ids=["-1y", "-8h", "+30d"])
def test_clock_offset_shifts_every_reported_time(
    make_simulator: Callable[..., Simulator], offset: float
) -> None:
    sim = make_simulator(clock_offset=offset)
    clock = fake_clock(sim)
    before = datetime.now(timezone.utc)
    job = completed_job(sim, clock)
    after = datetime.now(timezone.utc)

    created = parse_time(job["created_at"])
    shift = timedelta(seconds=offset)
    assert before + shift - timedelta(seconds=1) <= created <= after + shift + timedelta(seconds=1)
    assert parse_time(job["started_at"]) - created == timedelta(seconds=QUEUED)
    assert parse_time(job["finished_at"]) - created == timedelta(seconds=QUEUED + RUNNING)
    [listed] = requests.get(api(sim, "/requests"), headers=KEY, timeout=TIMEOUT).json()["data"]
    assert listed["created_at"] == job["created_at"]
