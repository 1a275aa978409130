"""The simulator and the hook against the written contract, shared/api/openapi.yaml.

Every body the simulator answers with is validated against the schema the contract declares for that
operation and status; success bodies must also carry no property the contract does not declare. The
bodies the hook sends are validated against the request schemas, as the simulator receives them.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import jsonschema
import pytest
import requests
import yaml

from airflow_provider_chamelaion.client.inputs import JobInputs
from airflow_provider_chamelaion.client.retry import RetryPolicy
from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook
from airflow_provider_chamelaion.simulator import Simulator, SimulatorConfig
from tests.harness.constants import API_KEY, ROOT
from tests.harness.simulator import AUDIO_URL, KEY, QUEUED, RUNNING, TIMEOUT, VALID_BODY, VIDEO_URL

OPENAPI = ROOT.parent / "shared" / "api" / "openapi.yaml"

pytestmark = pytest.mark.skipif(
    not OPENAPI.is_file(),
    reason=f"the API contract {OPENAPI} is absent (shared/ must be checked out beside the repository)",
)

GENERATE = "/v1/lipsync/generate"
GENERATE_WITH_MEDIA = "/v1/lipsync/generate-with-media"
GET_REQUEST = "/v1/lipsync/requests/{id}"
LIST_REQUESTS = "/v1/lipsync/requests"


# -- the contract -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    return loaded


def resolve(spec: dict[str, Any], node: Any) -> Any:
    """``node`` with every local ``$ref`` replaced by what it points at (the contract has no cycles)."""
    if isinstance(node, dict):
        if "$ref" in node:
            ref = node["$ref"]
            assert ref.startswith("#/"), f"only local references are supported, got {ref}"
            target: Any = spec
            for part in ref[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            return resolve(spec, target)
        return {key: resolve(spec, value) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve(spec, value) for value in node]
    return node


def closed(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` on every object that declares its properties."""
    if isinstance(schema, dict):
        result = {key: closed(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            result["additionalProperties"] = False
        return result
    if isinstance(schema, list):
        return [closed(value) for value in schema]
    return schema


def component(spec: dict[str, Any], name: str) -> dict[str, Any]:
    schema: dict[str, Any] = resolve(spec, spec["components"]["schemas"][name])
    return schema


def response_schema(spec: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    responses = spec["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} does not declare a {status} response"
    response = resolve(spec, responses[str(status)])
    schema: dict[str, Any] = response["content"]["application/json"]["schema"]
    return schema


def validate(instance: Any, schema: dict[str, Any]) -> None:
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(instance)


def check_response(
    spec: dict[str, Any], path: str, method: str, response: requests.Response, status: int
) -> dict[str, Any]:
    """Assert ``response`` is the declared ``status`` with a JSON body matching the declared schema."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/json"
    body: dict[str, Any] = response.json()
    schema = response_schema(spec, path, method, status)
    validate(body, closed(schema) if status < 300 else schema)
    return body


# -- the validation machinery can fail ----------------------------------------------------------------


def test_the_contract_is_a_valid_openapi_document(spec: dict[str, Any]) -> None:
    from openapi_spec_validator import validate as validate_spec

    validate_spec(spec)


def test_the_contract_examples_validate_and_broken_copies_do_not(spec: dict[str, Any]) -> None:
    operation = spec["paths"][GENERATE]["post"]
    example = operation["requestBody"]["content"]["application/json"]["example"]
    body_schema = component(spec, "LipsyncGenerateBody")
    validate(example, body_schema)
    request_example = spec["paths"][GET_REQUEST]["get"]["responses"]["200"]["content"]["application/json"][
        "example"
    ]
    validate(request_example, closed(response_schema(spec, GET_REQUEST, "GET", 200)))

    broken_bodies = [
        {"inputs": [example["inputs"][0]]},
        {**example, "webhook": "https://example.com"},
        {**example, "disable_active_speaker_detection": "yes"},
        {"inputs": [{"type": "image", "url": VIDEO_URL}, example["inputs"][1]]},
        {"inputs": [{"type": "video"}, example["inputs"][1]]},
    ]
    for broken in broken_bodies:
        with pytest.raises(jsonschema.ValidationError):
            validate(broken, body_schema)
    with pytest.raises(jsonschema.ValidationError):
        validate({**request_example, "progress": 0.5}, closed(response_schema(spec, GET_REQUEST, "GET", 200)))
    with pytest.raises(jsonschema.ValidationError):
        validate({"status": "success"}, response_schema(spec, GENERATE, "POST", 200))


# -- simulator responses ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Captured:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


class BodyCapture:
    """ASGI middleware in front of the simulator: keeps every request exactly as it arrived.

    A request is kept before its answer is sent: a client that has its answer finds it captured (kept
    after the app returned, it raced the test's next line).
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.captured: list[Captured] = []

    async def __call__(self, scope: Any, receive: Callable[[], Any], send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []

        async def recording_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
            return message

        kept = False

        def keep() -> None:
            nonlocal kept
            if not kept:
                kept = True
                self.captured.append(
                    Captured(
                        method=scope["method"],
                        path=scope["path"],
                        query=scope.get("query_string", b"").decode(),
                        headers={name.decode().lower(): value.decode() for name, value in scope["headers"]},
                        body=b"".join(chunks),
                    )
                )

        async def keeping_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                keep()
            await send(message)

        try:
            await self.app(scope, recording_receive, keeping_send)
        finally:
            keep()


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Simulator, FakeClock, BodyCapture]]:
    simulator = Simulator(
        SimulatorConfig(api_key=API_KEY, phases=(("queued", QUEUED), ("running", RUNNING)), output_size=1024)
    )
    capture = BodyCapture(simulator.app)
    simulator.app = capture  # type: ignore[assignment]  # read when the server starts
    clock = FakeClock()
    simulator.state.clock = clock
    with simulator:
        monkeypatch.setenv("AIRFLOW_CONN_CHAMELAION_DEFAULT", simulator.connection_json())
        yield simulator, clock, capture


def api(simulator: Simulator, path: str) -> str:
    return simulator.base_url + path


def upload_files() -> dict[str, tuple[str, bytes, str]]:
    return {"video": ("clip.mp4", b"v" * 2048, "video/mp4"), "audio": ("dub.wav", b"a" * 512, "audio/wav")}


def test_generate_200(spec: dict[str, Any], sim: tuple[Simulator, FakeClock, BodyCapture]) -> None:
    simulator, _, _ = sim
    response = requests.post(api(simulator, GENERATE), json=VALID_BODY, headers=KEY, timeout=TIMEOUT)
    body = check_response(spec, GENERATE, "POST", response, 200)
    assert body["request_id"] in simulator.state.jobs


def test_generate_with_media_200(spec: dict[str, Any], sim: tuple[Simulator, FakeClock, BodyCapture]) -> None:
    simulator, _, _ = sim
    response = requests.post(
        api(simulator, GENERATE_WITH_MEDIA), files=upload_files(), headers=KEY, timeout=TIMEOUT
    )
    body = check_response(spec, GENERATE_WITH_MEDIA, "POST", response, 200)
    assert body["request_id"] in simulator.state.jobs


def _jobs_in_every_status(simulator: Simulator, clock: FakeClock) -> dict[str, str]:
    """One job per status, each read at the same clock reading; returns status -> job id."""
    state = simulator.state
    completed = state.create_job(reference_id="dub-42", source="urls", inputs={}).id
    state.fail_next()
    failed = state.create_job(reference_id=None, source="upload", inputs={}).id
    clock.now += QUEUED + RUNNING + 1
    running = state.create_job(reference_id="dub-43", source="urls", inputs={}).id
    clock.now += QUEUED + 0.01
    queued = state.create_job(reference_id=None, source="urls", inputs={}).id
    unknown = state.create_job(reference_id=None, source="urls", inputs={}).id
    state.force_status(unknown, "upscaling")
    forced_failed = state.create_job(reference_id=None, source="urls", inputs={}).id
    state.force_status(forced_failed, "failed", error_message="Lip sync failed: quota exceeded")
    return {
        "completed": completed,
        "failed": failed,
        "running": running,
        "queued": queued,
        "upscaling": unknown,
        "forced-failed": forced_failed,
    }


@pytest.mark.parametrize("status", ["queued", "running", "completed", "failed", "upscaling", "forced-failed"])
def test_get_request_200_in_every_status(
    spec: dict[str, Any], sim: tuple[Simulator, FakeClock, BodyCapture], status: str
) -> None:
    simulator, clock, _ = sim
    job_id = _jobs_in_every_status(simulator, clock)[status]

    response = requests.get(api(simulator, f"/v1/lipsync/requests/{job_id}"), headers=KEY, timeout=TIMEOUT)

    body = check_response(spec, GET_REQUEST, "GET", response, 200)
    assert body["status"] == status.removeprefix("forced-")


def test_get_request_by_reference_id_200(
    spec: dict[str, Any], sim: tuple[Simulator, FakeClock, BodyCapture]
) -> None:
    simulator, clock, _ = sim
    jobs = _jobs_in_every_status(simulator, clock)

    response = requests.get(api(simulator, "/v1/lipsync/requests/dub-42"), headers=KEY, timeout=TIMEOUT)

    assert check_response(spec, GET_REQUEST, "GET", response, 200)["id"] == jobs["completed"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [({}, 6), ({"limit": 2, "offset": 1}, 2), ({"reference_id": "dub-43"}, 1), ({"reference_id": "none"}, 0)],
)
def test_list_200(
    spec: dict[str, Any], sim: tuple[Simulator, FakeClock, BodyCapture], params: dict[str, Any], expected: int
) -> None:
    simulator, clock, _ = sim
    _jobs_in_every_status(simulator, clock)

    response = requests.get(api(simulator, LIST_REQUESTS), params=params, headers=KEY, timeout=TIMEOUT)

    body = check_response(spec, LIST_REQUESTS, "GET", response, 200)
    assert len(body["data"]) == expected


def test_list_200_with_nothing(spec: dict[str, Any], sim: tuple[Simulator, FakeClock, BodyCapture]) -> None:
    simulator, _, _ = sim
    response = requests.get(api(simulator, LIST_REQUESTS), headers=KEY, timeout=TIMEOUT)
    assert check_response(spec, LIST_REQUESTS, "GET", response, 200)["data"] == []


OPERATIONS = [(GENERATE, "POST"), (GENERATE_WITH_MEDIA, "POST"), (GET_REQUEST, "GET"), (LIST_REQUESTS, "GET")]


def _send(
    simulator: Simulator, path: str, method: str, headers: dict[str, str], **kwargs: Any
) -> requests.Response:
    if path == GENERATE:
        kwargs.setdefault("json", VALID_BODY)
    if path == GENERATE_WITH_MEDIA:
        kwargs.setdefault("files", upload_files())
    if path == GET_REQUEST:
        path = (
            "/v1/lipsync/requests/"
            + simulator.state.create_job(reference_id=None, source="urls", inputs={}).id
        )
    return requests.request(method, api(simulator, path), headers=headers, timeout=TIMEOUT, **kwargs)


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_401_on_every_operation(
    spec: dict[str, Any], sim: tuple[Simulator, FakeClock, BodyCapture], path: str, method: str
) -> None:
    simulator, _, _ = sim
    for headers in ({}, {"x-api-key": "wrong"}):
        check_response(spec, path, method, _send(simulator, path, method, headers), 401)


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_429_on_every_operation(
    spec: dict[str, Any], sim: tuple[Simulator, FakeClock, BodyCapture], path: str, method: str
) -> None:
    simulator, _, _ = sim
    simulator.state.add_fault(kind="status", status=429, retry_after="1")
    check_response(spec, path, method, _send(simulator, path, method, KEY), 429)


def test_404_on_get_request(spec: dict[str, Any], sim: tuple[Simulator, FakeClock, BodyCapture]) -> None:
    simulator, _, _ = sim
    for missing in ("00000000-0000-0000-0000-000000000000", "no-such-reference"):
        response = requests.get(
            api(simulator, f"/v1/lipsync/requests/{missing}"), headers=KEY, timeout=TIMEOUT
        )
        check_response(spec, GET_REQUEST, "GET", response, 404)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"json": {"inputs": []}},
        {"json": {**VALID_BODY, "extra": 1}},
        {"data": b"{not json", "headers": {"Content-Type": "application/json"}},
    ],
    ids=["no-inputs", "unknown-field", "not-json"],
)
def test_422_on_generate(
    spec: dict[str, Any], sim: tuple[Simulator, FakeClock, BodyCapture], kwargs: dict[str, Any]
) -> None:
    simulator, _, _ = sim
    headers = {**KEY, **kwargs.pop("headers", {})}
    response = requests.post(api(simulator, GENERATE), headers=headers, timeout=TIMEOUT, **kwargs)
    check_response(spec, GENERATE, "POST", response, 422)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"files": {"video": ("v.mp4", b"v")}},
        {"json": VALID_BODY},
        {"files": {"video": ("v", b"v"), "audio": ("a", b"")}},
    ],
    ids=["missing-audio", "not-multipart", "empty-audio"],
)
def test_422_on_generate_with_media(
    spec: dict[str, Any], sim: tuple[Simulator, FakeClock, BodyCapture], kwargs: dict[str, Any]
) -> None:
    simulator, _, _ = sim
    response = requests.post(api(simulator, GENERATE_WITH_MEDIA), headers=KEY, timeout=TIMEOUT, **kwargs)
    check_response(spec, GENERATE_WITH_MEDIA, "POST", response, 422)


def test_422_on_list_is_an_error_object(
    spec: dict[str, Any], sim: tuple[Simulator, FakeClock, BodyCapture]
) -> None:
    """The contract declares no 422 for the list call; the simulator's one must still be an error object."""
    simulator, _, _ = sim
    response = requests.get(api(simulator, LIST_REQUESTS), params={"limit": 0}, headers=KEY, timeout=TIMEOUT)
    assert response.status_code == 422
    validate(
        response.json(),
        resolve(spec, spec["components"]["responses"]["Error"])["content"]["application/json"]["schema"],
    )


# -- what the hook sends ------------------------------------------------------------------------------


GENERATE_OPTIONS: list[dict[str, Any]] = [
    {},
    {"reference_id": "dub-episode-42"},
    {"disable_active_speaker_detection": True},
    {"disable_active_speaker_detection": False},
    {"reference_id": "batch-2026-04:ja", "disable_active_speaker_detection": True},
]


@pytest.mark.parametrize("options", GENERATE_OPTIONS, ids=lambda options: ",".join(options) or "plain")
def test_generate_bodies_the_hook_sends_conform(
    spec: dict[str, Any],
    sim: tuple[Simulator, FakeClock, BodyCapture],
    retry_policy: RetryPolicy,
    options: dict[str, Any],
) -> None:
    _, _, capture = sim
    hook = ChamelaionHook(retry_policy=retry_policy)

    hook.generate(VIDEO_URL, AUDIO_URL, **options)

    [sent] = [c for c in capture.captured if c.method == "POST" and c.path.endswith(GENERATE)]
    assert sent.path == "/api" + GENERATE
    assert sent.headers["content-type"].split(";")[0] == "application/json"
    assert sent.headers["x-api-key"] == API_KEY  # the contract's security scheme
    body = json.loads(sent.body)
    validate(body, component(spec, "LipsyncGenerateBody"))
    assert body == JobInputs.of(video_url=VIDEO_URL, audio_url=AUDIO_URL, **options).body()
    for name, value in options.items():
        assert body[name] == value


@pytest.mark.parametrize("options", GENERATE_OPTIONS, ids=lambda options: ",".join(options) or "plain")
def test_wire_generate_body_conforms(spec: dict[str, Any], options: dict[str, Any]) -> None:
    validate(
        JobInputs.of(video_url=VIDEO_URL, audio_url=AUDIO_URL, **options).body(),
        component(spec, "LipsyncGenerateBody"),
    )


def test_upload_the_hook_sends_conforms(
    spec: dict[str, Any], sim: tuple[Simulator, FakeClock, BodyCapture], retry_policy: RetryPolicy, tmp_path
) -> None:
    simulator, _, capture = sim
    video, audio = tmp_path / "episode 42.mp4", tmp_path / "dub.wav"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"v" * 5000)
    audio.write_bytes(b"RIFF" + b"a" * 700)

    ChamelaionHook(retry_policy=retry_policy).generate_with_media(video, audio)

    [sent] = [c for c in capture.captured if c.method == "POST"]
    assert sent.path == "/api" + GENERATE_WITH_MEDIA
    assert sent.headers["x-api-key"] == API_KEY
    assert sent.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert int(sent.headers["content-length"]) == len(sent.body)
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + sent.headers["content-type"].encode() + b"\r\n\r\n" + sent.body
    )
    parts = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
    form = {name: part.get_payload(decode=True).decode("latin-1") for name, part in parts.items()}  # type: ignore[union-attr]
    operation = spec["paths"][GENERATE_WITH_MEDIA]["post"]
    validate(
        form, closed(resolve(spec, operation["requestBody"]["content"]["multipart/form-data"]["schema"]))
    )
    assert parts["video"].get_filename() == "episode 42.mp4"
    assert parts["video"].get_content_type() == "video/mp4"
    assert parts["video"].get_payload(decode=True) == video.read_bytes()
    assert parts["audio"].get_payload(decode=True) == audio.read_bytes()
    assert simulator.state.uploads == [{"video": video.stat().st_size, "audio": audio.stat().st_size}]


def test_list_query_the_hook_sends_conforms(
    spec: dict[str, Any], sim: tuple[Simulator, FakeClock, BodyCapture], retry_policy: RetryPolicy
) -> None:
    _, _, capture = sim
    ChamelaionHook(retry_policy=retry_policy).list_requests(limit=5, offset=0, reference_id="dub-42")

    [sent] = [c for c in capture.captured if c.path == "/api" + LIST_REQUESTS]
    query = {name: values[0] for name, values in parse_qs(sent.query).items()}
    declared = {param["name"]: param["schema"] for param in spec["paths"][LIST_REQUESTS]["get"]["parameters"]}
    assert set(query) <= set(declared)
    for name, raw in query.items():
        value: Any = int(raw) if declared[name]["type"] == "integer" else raw
        validate(value, declared[name])
    assert query == {"limit": "5", "offset": "0", "reference_id": "dub-42"}


def test_rate_limit_429_and_a_listing_with_history_follow_the_contract(
    spec: dict[str, Any], sim: tuple[Simulator, FakeClock, BodyCapture]
) -> None:
    simulator, _, _ = sim
    simulator.state.reset(
        SimulatorConfig(api_key=API_KEY, post_rate_limit=1, history_size=30, max_page_size=10)
    )
    simulator.state.clock = FakeClock()
    first = requests.post(api(simulator, GENERATE), json=VALID_BODY, headers=KEY, timeout=TIMEOUT)
    refused = requests.post(api(simulator, GENERATE), json=VALID_BODY, headers=KEY, timeout=TIMEOUT)
    listing = requests.get(api(simulator, LIST_REQUESTS), params={"limit": 100}, headers=KEY, timeout=TIMEOUT)

    check_response(spec, GENERATE, "POST", first, 200)
    check_response(spec, GENERATE, "POST", refused, 429)
    body = check_response(spec, LIST_REQUESTS, "GET", listing, 200)
    assert body["pagination"] == {"limit": 10, "offset": 0, "total": 31}
