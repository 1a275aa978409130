"""Running the simulator: in-process on a background thread (tests, DAG tests) or in the foreground (CLI)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from typing import Any

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from airflow_provider_chamelaion.simulator.app import FaultInjection, Scope, create_app
from airflow_provider_chamelaion.simulator.state import SimulatorConfig, SimulatorState


class _DeliberateDropFilter(logging.Filter):
    """Hide uvicorn's complaint about a response never started: a dropped-connection fault does that."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "without starting response" not in record.getMessage()


logging.getLogger("uvicorn.error").addFilter(_DeliberateDropFilter())


def _tracking_protocol(registry: dict[tuple[str, int], asyncio.Transport]) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol, remembering each connection's transport so a fault can really drop it."""

    class TrackingHTTPProtocol(AutoHTTPProtocol):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            peer = transport.get_extra_info("peername")
            if peer:
                registry[(peer[0], peer[1])] = transport

        def connection_lost(self, exc: Exception | None) -> None:
            peer = self.transport.get_extra_info("peername") if self.transport else None
            if peer:
                registry.pop((peer[0], peer[1]), None)
            super().connection_lost(exc)

    return TrackingHTTPProtocol


class Simulator:
    """A local Chamelaion API on a real socket.

    >>> with Simulator() as sim:  # doctest: +SKIP
    ...     hook_env = sim.connection_json()  # for AIRFLOW_CONN_CHAMELAION_DEFAULT
    ...     sim.state.add_fault(kind="status", status=503, times=2)

    :param config: behaviour; see :class:`SimulatorConfig`.
    :param host: address to listen on (loopback by default).
    :param port: port to listen on; 0 picks a free one (see :attr:`port` after :meth:`start`).
    """

    def __init__(
        self, config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.state = SimulatorState(config or SimulatorConfig())
        self.host = host
        self._requested_port = port
        self._transports: dict[tuple[str, int], asyncio.Transport] = {}
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = FaultInjection(create_app(self.state), self.state, self._abort)

    @property
    def config(self) -> SimulatorConfig:
        return self.state.config

    def reset(self, config: SimulatorConfig | None = None) -> None:
        """Wait for calls in flight, then forget every job, fault and call (and take ``config`` if given).

        Lets one running server serve many tests: stopping and starting one costs far more.
        """
        self.state.wait_idle()
        self.state.reset(config)

    def _abort(self, scope: Scope) -> None:
        client = scope.get("client")
        transport = self._transports.get((client[0], client[1])) if client else None
        if transport is not None:
            transport.abort()

    @property
    def port(self) -> int:
        """The port it listens on (a free one when 0 was asked for); known once started."""
        if self._socket is None:
            raise RuntimeError("the simulator is not started")
        return int(self._socket.getsockname()[1])

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What to put in the connection's host: ``http://127.0.0.1:<port>/api``."""
        return f"{self.origin}/api"

    def connection_json(self) -> str:
        """The connection as JSON, for ``AIRFLOW_CONN_CHAMELAION_DEFAULT``."""
        return json.dumps({"conn_type": "chamelaion", "host": self.base_url, "password": self.config.api_key})

    def _make_server(self) -> uvicorn.Server:
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            http=_tracking_protocol(self._transports),
            lifespan="off",
            timeout_keep_alive=30,
        )
        return uvicorn.Server(config)

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        sock.listen(2048)
        sock.set_inheritable(True)
        self._socket = sock
        return sock

    def start(self) -> Simulator:
        """Serve on a background thread; returns once the socket accepts connections."""
        sock = self._bind()
        self._server = self._make_server()
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="chamelaion-simulator", daemon=True
        )
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the Chamelaion simulator failed to start")
            self._thread.join(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = None

    def serve_forever(self) -> None:
        """Serve in the foreground until interrupted (the CLI)."""
        sock = self._bind()
        self._server = self._make_server()
        self._server.run(sockets=[sock])

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
