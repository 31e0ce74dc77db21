"""Readiness: may this process take calls now? The answer behind `/readyz` (admin.py)
and tfgate's own gRPC health service (health.py).

Ready means: a config is loaded (the runtime has a State), the process is not draining,
and every upstream of that config is reachable: its channel, the one calls use, is
connected or connects within `admin.readiness_timeout_s`. That costs no call on the
upstream. An answer is reused for `admin.readiness_cache_s`, and probes that arrive while
one check runs wait for that check, so however many probes come, the upstreams see at
most one connection attempt per cache period. Issuer (JWKS) outages do not make tfgate
unready: calls with certificates and with known keys still pass.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from proxy.runtime import Runtime


@dataclass(frozen=True)
class Ready:
    ok: bool
    detail: str  # "ready", or what is not


class Readiness:
    """Cached, single-flight readiness of one process (use on its event loop)."""

    def __init__(self, runtime: Runtime, *, timeout_s: float, cache_s: float) -> None:
        self.runtime = runtime
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        self.draining = False
        self.checks = 0  # upstream checks actually run (probes answered from cache do not)
        self._answer: Ready | None = None
        self._at = 0.0
        self._running: asyncio.Future[Ready] | None = None

    def drain(self) -> None:
        """From now on, not ready (the process is stopping)."""
        self.draining = True

    async def check(self) -> Ready:
        if self.draining:
            return Ready(False, "draining")
        if self._answer is not None and time.monotonic() - self._at < self.cache_s:
            return self._answer
        if self._running is None:
            self._running = asyncio.ensure_future(self._check())
            self._running.add_done_callback(self._done)
        return await asyncio.shield(self._running)

    def _done(self, future: asyncio.Future[Ready]) -> None:
        self._running = None
        if not future.cancelled() and future.exception() is None:
            self._answer, self._at = future.result(), time.monotonic()

    async def _check(self) -> Ready:
        self.checks += 1
        state = self.runtime.enter()  # its channels stay open while we use them
        try:
            names = list(state.upstreams)
            results = await asyncio.gather(
                *(state.upstreams[n].reachable(self.timeout_s) for n in names),
                return_exceptions=True)
        finally:
            self.runtime.leave(state)
        down = [n for n, ok in zip(names, results, strict=True) if ok is not True]
        if down:
            return Ready(False, "upstream unreachable: " + ", ".join(down))
        return Ready(True, "ready")
