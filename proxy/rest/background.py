"""Run a REST front in its own thread and event loop: for tests, the benchmark and the demo
of the prototype (`RestInThread`). The real tfgate runs `server.serve` in its main loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import ssl
import threading
from collections.abc import Callable
from typing import Any

import grpc

from proxy.rest.server import Admit, HttpLimits, RestFront, RunningRest, serve
from proxy.rest.upstream import NativeUpstream, TranslatedUpstream


class RestInThread:
    """`start()` -> serving on 127.0.0.1:`port`; `stop()` closes everything."""

    def __init__(self, admit: Admit, tls: ssl.SSLContext | None, *, rest_upstream: str = "",
                 grpc_upstream: str = "", limits: HttpLimits | None = None) -> None:
        if bool(rest_upstream) == bool(grpc_upstream):
            raise ValueError("give exactly one of rest_upstream, grpc_upstream")
        self._args = (admit, tls, rest_upstream, grpc_upstream, limits)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="rest-front",
                                        daemon=True)
        self._running: RunningRest | None = None
        self.port = 0

    def _run(self, make: Callable[[], Any], timeout: float = 30.0) -> Any:
        future: concurrent.futures.Future = asyncio.run_coroutine_threadsafe(make(), self._loop)
        return future.result(timeout)

    async def _start(self) -> RunningRest:
        admit, tls, rest_upstream, grpc_upstream, limits = self._args
        if rest_upstream:
            upstream: Any = NativeUpstream(f"http://{rest_upstream}")
        else:
            upstream = TranslatedUpstream(grpc.aio.insecure_channel(grpc_upstream))
        return await serve(RestFront(admit, upstream, limits), "127.0.0.1", 0, tls)

    def start(self) -> RestInThread:
        self._thread.start()
        self._running = self._run(self._start)
        self.port = self._running.port
        return self

    def stop(self) -> None:
        if self._running is not None:
            running, self._running = self._running, None

            async def close() -> None:
                await running.close()
                await running.front._upstream.close()

            self._run(close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> RestInThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
