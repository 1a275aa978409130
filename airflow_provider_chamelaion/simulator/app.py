"""The simulator's HTTP surface: the Chamelaion Lipsync API under ``/api``, outputs under ``/outputs``.

Request bodies are parsed by hand (not by FastAPI's models) so that every rejection is a 422 with a
JSON ``message`` naming the field, like an API a client must be liberal with. Uploads are parsed
streaming with python-multipart and never held in memory; outputs are generated streaming.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from airflow_provider_chamelaion.simulator.state import CallRecord, Fault, SimulatorState

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

API_PREFIX = "/api/v1/lipsync"
OUTPUT_BLOCK = 1 << 20


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status, headers=headers)


def _is_http_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def validate_generate_body(body: object) -> str | None:
    """Why a ``/generate`` body is invalid, or ``None`` if it is valid."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    unknown = sorted(set(body) - {"inputs", "disable_active_speaker_detection", "reference_id"})
    if unknown:
        return f"unknown field(s): {', '.join(unknown)}"
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 2:
        return "inputs must be a list of exactly one video input and one audio input"
    types: list[object] = []
    for index, item in enumerate(inputs):
        if not isinstance(item, dict) or set(item) != {"type", "url"}:
            return f"inputs[{index}] must be an object with exactly 'type' and 'url'"
        if item["type"] not in ("video", "audio"):
            return f"inputs[{index}].type must be 'video' or 'audio'"
        if not _is_http_url(item["url"]):
            return f"inputs[{index}].url must be an http(s) URL"
        types.append(item["type"])
    if sorted(types) != ["audio", "video"]:  # type: ignore[type-var]
        return "inputs must hold exactly one video input and one audio input"
    if "disable_active_speaker_detection" in body and not isinstance(
        body["disable_active_speaker_detection"], bool
    ):
        return "disable_active_speaker_detection must be a boolean"
    if "reference_id" in body and not isinstance(body["reference_id"], str):
        return "reference_id must be a string"
    return None


async def _consume_multipart(request: Request) -> dict[str, int] | str:
    """Read a multipart upload streaming; return bytes per file part, or why it is invalid."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        return "body must be multipart/form-data with a boundary"
    sizes: dict[str, int] = {}
    current: dict[str, Any] = {"header": b"", "value": b"", "name": None}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        current["header"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        current["value"] += data[start:end]

    def on_header_end() -> None:
        if current["header"].lower() == b"content-disposition":
            _, params = parse_options_header(current["value"])
            name = params.get(b"name")
            current["name"] = name.decode() if name else None
        current["header"], current["value"] = b"", b""

    def on_headers_finished() -> None:
        if current["name"] is not None:
            sizes.setdefault(current["name"], 0)

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if current["name"] is not None:
            sizes[current["name"]] += end - start

    def on_part_end() -> None:
        current["name"] = None

    parser = MultipartParser(
        boundary,
        callbacks={
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except Exception as err:
        return f"malformed multipart body: {err}"
    return sizes


def create_app(state: SimulatorState) -> FastAPI:
    """The FastAPI application serving ``state``."""
    app = FastAPI(title="Chamelaion Lipsync API simulator", docs_url=None, redoc_url=None, openapi_url=None)

    def unauthorized(request: Request) -> Response | None:
        if request.headers.get("x-api-key") != state.config.api_key:
            return _error(401, "Invalid or missing API key (x-api-key header)")
        return None

    def origin(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def rate_limited() -> Response | None:
        """The account's POST rate limit: a 429 with ``Retry-After`` (whole seconds), nothing created."""
        wait = state.admit_post()
        if wait is None:
            return None
        return _error(
            429,
            f"Rate limit exceeded: at most {state.config.post_rate_limit:g} requests per second",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(f"{API_PREFIX}/generate")
    async def generate(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(422, "body must be valid JSON")
        if (problem := validate_generate_body(body)) is not None:
            return _error(422, problem)
        if (refused := rate_limited()) is not None:
            return refused
        inputs = {item["type"]: item["url"] for item in body["inputs"]}
        job = state.create_job(reference_id=body.get("reference_id"), source="urls", inputs=inputs)
        return JSONResponse({"request_id": job.id, "status": "success"})

    @app.post(f"{API_PREFIX}/generate-with-media")
    async def generate_with_media(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        sizes = await _consume_multipart(request)
        if isinstance(sizes, str):
            return _error(422, sizes)
        for part in ("video", "audio"):
            if part not in sizes:
                return _error(422, f"multipart part '{part}' is missing")
            if sizes[part] == 0:
                return _error(422, f"multipart part '{part}' is empty")
        if (refused := rate_limited()) is not None:
            return refused
        job = state.create_job(reference_id=None, source="upload", inputs=dict(sizes))
        with state.lock:
            state.uploads.append(dict(sizes))
        return JSONResponse({"request_id": job.id, "status": "success"})

    @app.get(f"{API_PREFIX}/requests/{{request_id}}")
    async def get_request(request_id: str, request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        job = state.find(request_id)
        if job is None:
            return _error(404, f"No lip sync request with id or reference_id {request_id!r}")
        return JSONResponse(state.describe(job, origin(request)))

    @app.get(f"{API_PREFIX}/requests")
    async def list_requests(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        query = request.query_params
        try:
            limit = int(query.get("limit", "20"))
            offset = int(query.get("offset", "0"))
        except ValueError:
            return _error(422, "limit and offset must be whole numbers")
        if limit < 1 or offset < 0:
            return _error(422, "limit must be at least 1 and offset at least 0")
        limit = min(limit, state.config.max_page_size)
        jobs, total = state.page(query.get("reference_id"), offset, limit)
        page = [state.describe(job, origin(request)) for job in jobs]
        return JSONResponse({"data": page, "pagination": {"limit": limit, "offset": offset, "total": total}})

    @app.get("/outputs/{name}")
    async def output(name: str, request: Request) -> Response:
        job_id = name.removesuffix(".mp4")
        job = state.jobs.get(job_id)
        if job is None or state.status_of(job)[0] != "completed":
            return _error(404, "No such output")
        refusal = state.check_output_signature(
            job_id, request.query_params.get("expires", ""), request.query_params.get("sig", "")
        )
        if refusal is not None:
            return _error(403, refusal)
        size = state.output_size_of(job)
        block = (f"chamelaion-simulated-output:{job_id}:".encode() * (OUTPUT_BLOCK // 40 + 1))[:OUTPUT_BLOCK]

        async def body() -> AsyncIterator[bytes]:
            view = memoryview(block)
            remaining = size
            while remaining:
                piece = view[: min(remaining, OUTPUT_BLOCK)]
                remaining -= len(piece)
                yield bytes(piece) if len(piece) < OUTPUT_BLOCK else block

        return StreamingResponse(
            body(), media_type="video/mp4", headers={"Content-Length": str(size), "Cache-Control": "no-store"}
        )

    @app.get("/_simulator/jobs")
    async def simulator_jobs(request: Request) -> Response:
        """Not part of the API: the simulator's jobs, for demos and out-of-process checks."""
        jobs = state.listing(None)
        return JSONResponse(
            {"total": len(jobs), "data": [state.describe(job, origin(request)) for job in jobs]}
        )

    return app


class FaultInjection:
    """ASGI middleware: records every call and applies the scripted or random fault it matches.

    :param abort: closes the client's connection at once (no response), given the ASGI scope.
    """

    def __init__(self, app: Any, state: SimulatorState, abort: Callable[[Scope], None]) -> None:
        self.app = app
        self.state = state
        self.abort = abort

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        had_key = any(name == b"x-api-key" for name, _ in scope.get("headers", []))
        fault = self.state.take_fault(method, path)
        # Recorded when the call starts, so a client that moved on never sees its call missing.
        record = CallRecord(method, path, None, had_key, fault.kind if fault else None)
        self.state.record(record)

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            await send(message)

        with self.state.serving():
            await self._serve(fault, scope, receive, recording_send)

    async def _serve(self, fault: Fault | None, scope: Scope, receive: Receive, send: Send) -> None:
        if fault is None:
            await self.app(scope, receive, send)
            return
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay)
            await self.app(scope, receive, send)
        elif fault.kind == "drop":
            self.abort(scope)
        elif fault.kind == "status":
            body = (fault.body or json.dumps({"message": f"Simulated HTTP {fault.status}"})).encode()
            headers = [
                (b"content-type", fault.content_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ]
            if fault.retry_after is not None:
                headers.append((b"retry-after", fault.retry_after.encode()))
            await send({"type": "http.response.start", "status": fault.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif fault.kind == "malformed":
            body = b'{"id": "6f82a2d8", "status": "compl'
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif fault.kind == "drop_after":

            async def swallow(message: Message) -> None:
                return None

            await self.app(scope, receive, swallow)
            self.abort(scope)
        elif fault.kind == "truncate":
            await self.app(scope, receive, _truncating_send(send, fault.cut_at, lambda: self.abort(scope)))
        elif fault.kind == "empty_page":
            await self.app(scope, receive, _emptying_send(send))


def _emptying_send(send: Send) -> Send:
    """A ``send`` that answers a listing page with its ``pagination`` but no requests."""
    start: dict[str, Message] = {}

    async def emptying(message: Message) -> None:
        if message["type"] == "http.response.start":
            start["message"] = message
            return
        payload = json.loads(message.get("body", b"") or b"{}")
        if isinstance(payload, dict) and "data" in payload:
            payload["data"] = []
        body = json.dumps(payload).encode()
        headers = [(name, value) for name, value in start["message"]["headers"] if name != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start["message"], "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return emptying


def _truncating_send(send: Send, cut_at: int, abort: Callable[[], None]) -> Send:
    """A ``send`` that passes the headers and the first ``cut_at`` body bytes, then drops the connection."""
    budget = {"left": cut_at, "cut": False}

    async def truncating(message: Message) -> None:
        if budget["cut"]:
            return
        if message["type"] != "http.response.body":
            await send(message)
            return
        body = message.get("body", b"")
        if len(body) < budget["left"]:
            budget["left"] -= len(body)
            await send(message)
            return
        await send({"type": "http.response.body", "body": body[: budget["left"]], "more_body": True})
        await asyncio.sleep(0.05)  # let the partial body leave before the connection goes
        budget["cut"] = True
        abort()

    return truncating
