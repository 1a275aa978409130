"""One aiohttp session per event loop, shared by every waiting trigger, behind an httpx-like ``request()``.

Why: the triggerer runs every trigger in one event loop. With 1,000 triggers polling once a second, a
poll through one ``httpx.AsyncClient`` per trigger cost 1.0-1.2 ms of CPU and left 41 objects in
reference cycles, so full garbage collections ran about once a second and stalled the loop for up to
~0.5 s (``benchmarks/results.md``). The same hook code on one shared aiohttp session cost 0.33 ms per
poll, left no cyclic garbage, and the worst stall was 13 ms. A shared *httpx* client is no answer: its
connection pool slows down with many connections (7.6 ms per poll).

:class:`SharedSessionClient` offers the one method the hook's async path calls, ``request()``, and
turns aiohttp's errors into the httpx exceptions the hook already classifies, so retries, error
mapping and response decoding stay in one place (:class:`~.chamelaion.ChamelaionHook`).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx


@dataclass(frozen=True)
class Answer:
    """The parts of a response the hook reads (the names httpx uses)."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes


class SharedSessionClient:
    """``request()`` over a shared aiohttp session, with this hook's timeouts."""

    def __init__(self, session: aiohttp.ClientSession, timeout: tuple[float, float]) -> None:
        connect, read = timeout
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        try:
            async with self._session.request(
                method, url, params=params, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as response:
                return Answer(response.status, response.headers, await response.read())
        # Mapped to httpx's classes so the hook's single classification applies; "connect" errors mean
        # the request never left, which matters for whether a POST may be retried.
        except aiohttp.ClientConnectorError as err:
            raise httpx.ConnectError(str(err)) from err
        except (aiohttp.ServerTimeoutError, asyncio.TimeoutError) as err:
            raise httpx.ReadTimeout(str(err) or "timed out waiting for the answer") from err
        except aiohttp.ClientError as err:
            raise httpx.ReadError(str(err) or type(err).__name__) from err


@dataclass
class _Shared:
    session: aiohttp.ClientSession
    users: int = field(default=0)


_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Shared] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def shared_client(timeout: tuple[float, float], user_agent: str) -> AsyncIterator[SharedSessionClient]:
    """A client on this event loop's shared session; the session closes when its last user leaves."""
    loop = asyncio.get_running_loop()
    shared = _SESSIONS.get(loop)
    if shared is None or shared.session.closed:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),  # one keep-alive connection per concurrent poll
            cookie_jar=aiohttp.DummyCookieJar(),  # triggers must not share cookies
            headers={"User-Agent": user_agent},
        )
        shared = _SESSIONS[loop] = _Shared(session)
    shared.users += 1
    try:
        yield SharedSessionClient(shared.session, timeout)
    finally:
        shared.users -= 1
        if shared.users == 0:
            if _SESSIONS.get(loop) is shared:
                del _SESSIONS[loop]
            await shared.session.close()
