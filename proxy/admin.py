"""The admin listener: `/healthz`, `/readyz` and `/metrics` over plaintext HTTP (aiohttp),
a front of its own on the data plane's event loop (`loop.py`), enabled by `admin:`.

- `/healthz`: 200 when the event loop answers (the process is alive).
- `/readyz`: 200 when readiness.py says ready, else 503 with what is not (an upstream's
  config name, or `draining`); answers are cached, so probes cannot load the upstreams.
- `/metrics`: the Prometheus text exposition (metrics.py), every worker's under
  `--workers`. It is rendered off the loop, one scrape at a time.

It reads no credentials: it listens on loopback unless `admin.allow_non_loopback` says
otherwise (docs/operations.md says what it then exposes). Requests are GETs of a few
hundred bytes, so its own bounds are small: `MAX_CONNECTIONS` open connections (more are
closed at once), 4 KiB request lines and headers, no body, idle connections closed after
`KEEPALIVE_S`. Under `--workers` every worker listens on the same port (SO_REUSEPORT).
"""

from __future__ import annotations

import asyncio
from typing import cast

from aiohttp import web

from proxy import config, metrics
from proxy.config import parse_address
from proxy.ports import ListenError
from proxy.readiness import Readiness

MAX_CONNECTIONS = 64
KEEPALIVE_S = 15.0
_MAX_LINE = 4096


class AdminServer:
    """A `Front` (service.py): started and stopped with the gRPC listener."""

    def __init__(self, cfg: config.Admin, readiness: Readiness, *,
                 reuse_port: bool = False) -> None:
        self.config = cfg
        self.readiness = readiness
        self.address = cfg.address
        self.port = 0
        self._reuse_port = reuse_port
        self._runner: web.AppRunner | None = None
        self._server: asyncio.base_events.Server | None = None
        self._render = asyncio.Lock()

    async def start(self) -> None:
        app = web.Application(client_max_size=1024)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, handle_signals=False, access_log=None,
                               keepalive_timeout=KEEPALIVE_S, max_line_size=_MAX_LINE,
                               max_field_size=_MAX_LINE, max_headers=32)
        await runner.setup()
        handlers = runner.server
        assert handlers is not None

        def connection() -> asyncio.Protocol:
            if len(handlers.connections) >= MAX_CONNECTIONS:
                return _Refuse()
            return handlers()

        _, host, port = parse_address(self.config.address)
        assert port is not None  # config/admin.py: host:port only
        try:
            self._server = await asyncio.get_running_loop().create_server(
                connection, host, port, reuse_port=self._reuse_port or None)
        except OSError as exc:
            await runner.cleanup()
            raise ListenError(self.config.address, exc.strerror or str(exc)) from None
        self._runner = runner
        self.port = self._server.sockets[0].getsockname()[1]
        self.address = f"{self.config.address.rpartition(':')[0]}:{self.port}"

    async def stop(self, grace: float | None) -> None:
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self._server = self._runner = None

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        ready = await self.readiness.check()
        metrics.health_answered("http", ready.ok)
        return web.Response(text=ready.detail + "\n", status=200 if ready.ok else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        async with self._render:  # one rendering at a time, in a thread: not on the loop
            body = await asyncio.get_running_loop().run_in_executor(None, metrics.render)
        return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})


class _Refuse(asyncio.Protocol):
    """A connection over `MAX_CONNECTIONS`: closed as soon as it is made."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).abort()
