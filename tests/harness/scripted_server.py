"""A scripted HTTP server on a real loopback socket, for the hook's async (aiohttp) path.

Each test scripts the answers in order (a status with a body and headers, or a transport fault: the
connection dropped before an answer, a body cut short, an answer later than the read timeout) and then
reads what the server received: method, raw path, headers, body and the client's port (to see that a
keep-alive connection was reused). It runs on the test's own event loop with ``aiohttp.web``'s
low-level server, so the provider's real aiohttp stack is exercised end to end without a mock of it
and without a dependency the provider does not already have.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import RawTestServer

#: The base path the server answers under, as the real API's base URL ends in ``/api``.
BASE_PATH = "/api"


@dataclass(frozen=True)
class Reply:
    """One scripted answer.

    :param fault: ``None`` for a normal answer; ``"drop"`` closes the connection before any answer;
        ``"truncate"`` sends the headers with a Content-Length larger than the body, then closes;
        ``"slow"`` waits ``delay`` seconds before answering.
    """

    status: int = 200
    json: Any = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    fault: str | None = None
    delay: float = 0.0

    def body(self) -> bytes:
        if self.text is not None:
            return self.text.encode()
        return b"" if self.json is None else jsonlib.dumps(self.json).encode()


@dataclass(frozen=True)
class Seen:
    """A request as the server received it."""

    method: str
    raw_path: str
    headers: dict[str, str]
    body: bytes
    client_port: int


class ScriptedServer:
    """Answers requests with ``script`` in order, then with ``default`` for every further request."""

    def __init__(self, server: RawTestServer) -> None:
        self._server = server
        self.script: list[Reply] = []
        self.default = Reply(404, {"message": "nothing scripted"})
        self.seen: list[Seen] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}{BASE_PATH}"

    def answer(self, *replies: Reply) -> None:
        self.script.extend(replies)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.seen.append(
            Seen(
                request.method,
                request.raw_path,
                {k.lower(): v for k, v in request.headers.items()},
                await request.read(),
                peer[1] if peer else 0,
            )
        )
        reply = self.script.pop(0) if self.script else self.default
        if reply.fault == "drop":
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError  # the handler ends without an answer
        if reply.fault == "slow":
            await asyncio.sleep(reply.delay)
        body = reply.body()
        content_type = "application/json" if reply.text is None else "text/plain"
        headers = {"Content-Type": content_type, **reply.headers}
        if reply.fault == "truncate":
            response = web.StreamResponse(status=reply.status, headers=headers)
            response.content_length = len(body) + 100
            await response.prepare(request)
            await response.write(body)
            assert request.transport is not None
            request.transport.close()
            return response
        return web.Response(status=reply.status, body=body, headers=headers)


async def scripted_server() -> AsyncIterator[ScriptedServer]:
    """Start a :class:`ScriptedServer` on a free loopback port (for an async fixture)."""
    holder: list[ScriptedServer] = []

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return await holder[0].handle(request)

    raw = RawTestServer(handler, host="127.0.0.1", port=0)
    await raw.start_server()
    holder.append(ScriptedServer(raw))
    try:
        yield holder[0]
    finally:
        await raw.close()
