"""The hook's async transport: one aiohttp session per event loop, shared by every waiting trigger.

aiohttp is the provider's only async HTTP library (``requests`` serves the sync path). Why one
*shared* session: the triggerer runs every trigger in one event loop, and what each poll costs there is
CPU and garbage. One ``httpx.AsyncClient`` per trigger cost several times the CPU of aiohttp and left
objects in reference cycles on every poll, so full garbage collections, which stop the loop for as long
as they walk the triggerer's whole heap, ran every second or so; a shared httpx client was slower still
(its pool slows down with many connections). On one shared aiohttp session a poll costs about what a
bare aiohttp GET costs, leaves no cyclic garbage and keeps few objects alive across the poll interval
(the figures, against ``HttpSensorTrigger`` and the bare GET: ``benchmarks/results.md``).

A standalone ``aget_request()`` (no ``client=``) opens a session for the call and closes it after,
unless a trigger on the loop holds one, which it then joins. That costs more CPU per call than a held
client, and closing a connection per call leaves reference cycles: fine for a one-off call; to poll,
hold a client from ``shared_async_client()``.

:class:`SharedSessionClient` sends a request and reads the whole (small, JSON) answer; it does not
interpret failures. aiohttp's exceptions reach the hook as they are, and
:func:`~airflow_provider_chamelaion.hooks.chamelaion.transport_error` classifies them (with
``requests``' exceptions, in one place) so the one retry policy can decide. A standalone
``aget_request()`` uses :func:`shared_client` too: it joins the loop's session when a trigger holds
one, else opens one for the call and closes it after.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Mapping
from typing import Any, NamedTuple

import aiohttp


class Answer(NamedTuple):
    """The parts of a response the hook reads. A tuple: cheap, and never part of a reference cycle."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class SharedSessionClient:
    """``request()`` over the loop's shared aiohttp session, with one hook's timeouts.

    Closing is not this object's business: the session belongs to every user on the loop and closes
    when :func:`shared_client`'s last user leaves.
    """

    __slots__ = ("_session", "_timeout")

    def __init__(self, session: aiohttp.ClientSession, timeout: tuple[float, float]) -> None:
        connect, read = timeout
        self._session = session
        # sock_connect bounds establishing a connection (a failure there means nothing was sent);
        # sock_read bounds each wait for data. No total: the retry policy bounds the whole call.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """Send one request (redirects are not followed) and read the whole answer.

        :raises aiohttp.ClientError: or ``asyncio.TimeoutError``, unclassified (the hook classifies).
        """
        # Awaited and released rather than used with ``async with``: the context manager's enter and
        # exit are four more coroutines per poll, with nothing to do once the body is read.
        response = await self._session.request(
            method, url, params=params, headers=headers, timeout=self._timeout, allow_redirects=False
        )
        try:
            return Answer(response.status, response.headers, await response.read())
        finally:
            response.release()


class _Shared:
    __slots__ = ("session", "users")

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.users = 0


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
