"""Micro-benchmark: what one poll costs with each async HTTP client choice, 1,000 pollers in one loop.

Not a goal of its own: the data behind the trigger benchmark's CPU-per-poll figure. Each variant runs in
a fresh interpreter against the same simulator (1,000 ``running`` jobs); 1,000 pollers each
``GET /api/v1/lipsync/requests/<id>`` once a second (starts spread over the first second) and parse the
JSON body. Same window and lag measurement as the trigger benchmark.

* ``httpx-per-poller`` / ``httpx-shared``: bare ``httpx.AsyncClient.get``, one client per poller or
  one for all (the hook's async path used one httpx client per trigger before aiohttp became its only
  async library; these rows keep the evidence for that choice, which is why httpx is a dev dependency);
* ``aiohttp-per-poller`` / ``aiohttp-shared``: bare ``aiohttp.ClientSession.get``, likewise;
* ``aiohttp-shared-via-hook``: ``ChamelaionHook.aget_request`` with ``client=hook.shared_async_client()``,
  one aiohttp session for all pollers: what each ``LipsyncRequestTrigger`` does now, minus the trigger's
  own loop;
* ``hook-standalone``: ``ChamelaionHook.aget_request`` without ``client=``: what a caller that holds no
  client pays (a session opened per call unless another call on the loop holds one);
* ``asyncio-streams``: a minimal keep-alive HTTP/1.1 client on ``asyncio.open_connection``: the floor
  of what the event loop and the sockets cost, below any HTTP library.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks.common import (
    WORK,
    Section,
    SimulatorProcess,
    child_env,
    emit,
    loadavg,
    log,
    run_child,
    table,
)
from benchmarks.loop import cyclic_garbage_per_call, measure_window

POLLERS = 1000
POLL_INTERVAL = 1.0
WARMUP_SECONDS = 4.0
TARGET_POLLS = 6000
MAX_WINDOW_SECONDS = 10.0
VARIANTS = (
    "httpx-per-poller",
    "httpx-shared",
    "aiohttp-per-poller",
    "aiohttp-shared",
    "aiohttp-shared-via-hook",
    "hook-standalone",
    "asyncio-streams",
)
DESCRIPTIONS = {
    "httpx-per-poller": "bare `httpx.AsyncClient.get`, one client per poller",
    "httpx-shared": "bare `httpx.AsyncClient.get`, one client for all",
    "aiohttp-per-poller": "bare `aiohttp.ClientSession.get`, one session per poller",
    "aiohttp-shared": "bare `aiohttp.ClientSession.get`, one session for all",
    "aiohttp-shared-via-hook": "`ChamelaionHook.aget_request` with `client=` `hook.shared_async_client()`: "
    "one aiohttp session shared by all pollers (the trigger's path)",
    "hook-standalone": "`ChamelaionHook.aget_request` without `client=`: each call joins the loop's session "
    "while another call holds it, else opens one and closes it after",
    "asyncio-streams": "minimal keep-alive HTTP/1.1 on `asyncio.open_connection`, no HTTP library",
}


def run(anchor_ms_per_poll: float | None = None) -> Section:
    started = time.monotonic()
    section = Section(f"Micro-benchmark: async HTTP client choices, {POLLERS:,} pollers in one loop")
    load = [loadavg()]
    results: dict[str, dict[str, Any]] = {}
    with SimulatorProcess(name="simulator-clients") as sim:
        ids = [sim.create_job() for _ in range(POLLERS)]
        ids_file = WORK / "client-ids.json"
        ids_file.write_text(json.dumps(ids))
        env = child_env(AIRFLOW_CONN_CHAMELAION_DEFAULT=sim.connection_json())
        try:
            for variant in VARIANTS:
                log(f"clients: {variant}")
                results[variant] = run_child(
                    "benchmarks.clients",
                    [variant, str(ids_file), sim.base_url, sim.api_key],
                    env=env,
                    timeout=180,
                    stderr_path=WORK / f"clients-{variant}.stderr",
                )
                r = results[variant]
                log(f"  {r['cpu_ms_per_poll']:.3f} ms CPU/poll, worst lag {r['lag_worst_ms']:.1f} ms")
        finally:
            ids_file.unlink(missing_ok=True)
    load.append(loadavg())
    section.seconds = time.monotonic() - started
    httpx_ms = results["httpx-per-poller"]["cpu_ms_per_poll"]
    rows = []
    for variant in VARIANTS:
        r = results[variant]
        rows.append(
            [
                f"`{variant}`",
                DESCRIPTIONS[variant],
                r["polls"],
                f"{r['polls'] / r['window_seconds']:.0f}",
                f"**{r['cpu_ms_per_poll']:.3f}**",
                f"{r['cpu_ms_per_poll'] / httpx_ms:.2f}",
                "" if anchor_ms_per_poll is None else f"{r['cpu_ms_per_poll'] / anchor_ms_per_poll:.2f}",
                f"{r['lag_worst_ms']:.1f}",
                f"{r['lag_p99_ms']:.1f}",
                f"{r['gc_worst_pause_ms']:.1f} ({r['gc_gen2_collections']})",
                f"{r['gc_total_ms'] / 1000 / max(r['cpu_seconds'], 1e-9):.0%}",
                f"{r['garbage_per_call']:.0f}",
                r["errors"],
            ]
        )
    section.lines += [
        f"{POLLERS:,} pollers, one GET a second each, starts spread over the first second; "
        f"{WARMUP_SECONDS:g} s warm-up, then {TARGET_POLLS:,} polls (or {MAX_WINDOW_SECONDS:g} s). Each "
        f"variant in a fresh interpreter against the same simulator. Load average (1 min) before / after: "
        f"{' / '.join(load)}.",
        "",
        *table(
            [
                "variant",
                "what",
                "polls",
                "polls/s",
                "CPU ms/poll",
                "vs httpx-per-poller",
                "vs HttpSensorTrigger",
                "worst lag ms",
                "p99 lag ms",
                "worst GC pause ms (gen-2 runs)",
                "GC time / CPU time",
                "cyclic garbage objects per poll",
                "errors",
            ],
            rows,
        ),
        "",
        "Cyclic garbage: objects one poll leaves in reference cycles, which only the cycle collector frees "
        "(100 sequential polls with the collector off and `gc.DEBUG_SAVEALL`). With hundreds of polls in "
        "flight, those objects live through young collections, reach the oldest generation and make "
        "full collections run about once a second over the whole heap. Named (non-builtin) types per poll:",
        "",
        *[
            f"* `{variant}`: "
            + (
                ", ".join(f"`{name}` {count:g}" for name, count in results[variant]["garbage_types"])
                or "none"
            )
            for variant in VARIANTS
        ],
        "",
    ]
    return section


# -- the child ------------------------------------------------------------------------------------

Fetch = Callable[[], Awaitable[Any]]


class _StreamsClient:
    """Keep-alive HTTP/1.1 GETs over one ``asyncio`` stream (no chunked encoding: the simulator
    always sends ``Content-Length`` for JSON)."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.header_block = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> bytes:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        request = f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.header_block}\r\n"
        self.writer.write(request.encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()


def hook_fetch(hook: Any, client: Any, request_id: str) -> Fetch:
    return lambda: hook.aget_request(request_id, client=client)


@contextlib.asynccontextmanager
async def _fetchers(variant: str, ids: list[str], base_url: str, api_key: str) -> AsyncIterator[list[Fetch]]:
    """One ``fetch()`` per poller, with whatever clients the variant needs, closed afterwards."""
    headers = {"x-api-key": api_key}
    urls = [f"{base_url}/v1/lipsync/requests/{i}" for i in ids]
    async with contextlib.AsyncExitStack() as stack:
        fetchers: list[Fetch] = []
        if variant.startswith("httpx"):
            import ssl

            import httpx

            context = ssl.create_default_context()  # shared by all clients: building one costs ~30 ms
            shared: httpx.AsyncClient | None = None
            if variant == "httpx-shared":
                limits = httpx.Limits(max_connections=None, max_keepalive_connections=len(ids))
                shared = await stack.enter_async_context(httpx.AsyncClient(limits=limits, verify=context))
            for url in urls:
                client = (
                    shared
                    if shared is not None
                    else await stack.enter_async_context(
                        httpx.AsyncClient(
                            limits=httpx.Limits(max_connections=4, max_keepalive_connections=1),
                            verify=context,
                        )
                    )
                )

                async def fetch_httpx(c: Any = client, u: str = url) -> Any:
                    response = await c.get(u, headers=headers)
                    response.raise_for_status()
                    return json.loads(response.content)

                fetchers.append(fetch_httpx)
        elif variant == "aiohttp-shared-via-hook":
            from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook

            session_client = await stack.enter_async_context(ChamelaionHook().shared_async_client())
            for request_id in ids:
                fetchers.append(hook_fetch(ChamelaionHook(), session_client, request_id))
        elif variant == "hook-standalone":
            from airflow_provider_chamelaion.hooks.chamelaion import ChamelaionHook

            for request_id in ids:
                fetchers.append(hook_fetch(ChamelaionHook(), None, request_id))
        elif variant.startswith("aiohttp"):
            import aiohttp

            shared_session: aiohttp.ClientSession | None = None
            if variant == "aiohttp-shared":
                shared_session = await stack.enter_async_context(
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
                )
            for url in urls:
                session = shared_session or await stack.enter_async_context(aiohttp.ClientSession())

                async def fetch_aiohttp(s: Any = session, u: str = url) -> Any:
                    async with s.get(u, headers=headers) as response:
                        response.raise_for_status()
                        return json.loads(await response.read())

                fetchers.append(fetch_aiohttp)
        else:
            from urllib.parse import urlsplit

            parts = urlsplit(base_url)
            for url in urls:
                streams = _StreamsClient(parts.hostname or "127.0.0.1", parts.port or 80, headers)
                stack.push_async_callback(streams.close)

                async def fetch_streams(c: _StreamsClient = streams, u: str = url) -> Any:
                    return json.loads(await c.get(urlsplit(u).path))

                fetchers.append(fetch_streams)
        yield fetchers


async def _poller(fetch: Fetch, delay: float, state: dict[str, int]) -> None:
    await asyncio.sleep(delay)
    while True:
        try:
            await fetch()
        except Exception:
            state["errors"] += 1
        state["polls"] += 1
        await asyncio.sleep(POLL_INTERVAL)


async def _child_async(variant: str, ids: list[str], base_url: str, api_key: str) -> dict[str, Any]:
    state = {"polls": 0, "errors": 0}
    async with _fetchers(variant, ids, base_url, api_key) as fetchers:
        await fetchers[0]()  # warm-up: lazy imports, the connection lookup
        gc.collect()
        rng = random.Random(42)
        tasks = [asyncio.create_task(_poller(f, rng.uniform(0, POLL_INTERVAL), state)) for f in fetchers]
        try:
            stats = await measure_window(
                lambda: state["polls"],
                warmup=WARMUP_SECONDS,
                target_polls=TARGET_POLLS,
                max_seconds=MAX_WINDOW_SECONDS,
            )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        garbage = await cyclic_garbage_per_call(fetchers[0])
    return {"variant": variant, **stats, **garbage, "errors": state["errors"]}


def child(argv: list[str]) -> int:
    variant, ids_file, base_url, api_key = argv
    ids = json.loads(Path(ids_file).read_text())
    emit(asyncio.run(_child_async(variant, ids, base_url, api_key)))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=argparse.REMAINDER, required=True)
    sys.exit(child(parser.parse_args().child))
