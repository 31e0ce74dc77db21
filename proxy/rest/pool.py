"""Where a REST body's CPU-heavy steps run: on the event loop when small, else on a few
threads, with a cap on the bytes waiting for them.

Parsing JSON costs tens of milliseconds per MiB (bench/rest_parse.py), and the event loop
serves every call of the process, gRPC and REST: a 16 MiB body parsed on it would stall
them all for about a second. On a thread the loop keeps running: CPython hands the GIL
back to it every switch interval (5 ms) while Python code runs (the facts and canonical
steps, the object hook of every JSON object), so other calls see at most that much delay
per parsing thread, except within one uninterrupted C step (json's array scan, zlib),
which is bounded by the body caps. The threads add no parallelism (the GIL), only
fairness; their count bounds how many bodies are parsed at once.

Bodies under `inline_below_bytes` run inline (a hand-off costs about as much as parsing
50 KiB). `max_queued_bytes` bounds what waits: a body that would pass it is refused with
`overloaded` (503) rather than queued. A cancelled call's work still finishes on its
thread (Python cannot stop it), and its bytes count until it does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

from proxy.config import RestParse
from proxy.errors import Reason, Reject

T = TypeVar("T")


class ParsePool:
    def __init__(self, cfg: RestParse) -> None:
        self._inline_below = cfg.inline_below_bytes
        self._max_queued = cfg.max_queued_bytes
        self._threads = cfg.threads
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.queued = 0  # bytes submitted, not yet done; touched on the event loop only

    def inline(self, size: int, may_inline: bool = True) -> bool:
        """Whether `run` would run work of `size` bytes on the event loop."""
        return self._threads == 0 or (may_inline and size < self._inline_below)

    async def run(self, size: int, fn: Callable[[Any], T], arg: Any, *,
                  may_inline: bool = True) -> T:
        """`fn(arg)`, where `size` (bytes of input) says what it costs."""
        if self.inline(size, may_inline):
            return fn(arg)
        if self.queued + size > self._max_queued:
            raise Reject(Reason.OVERLOADED, "too many request bodies waiting to be parsed "
                         f"(rest.parse.max_queued_bytes {self._max_queued})")
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                self._threads, thread_name_prefix="tfgate-rest-parse")
        loop = asyncio.get_running_loop()
        self.queued += size
        work = self._executor.submit(fn, arg)
        work.add_done_callback(lambda _: self._done(loop, size))
        return await asyncio.wrap_future(work)

    def _done(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        try:
            loop.call_soon_threadsafe(self._release, size)
        except RuntimeError:
            pass  # the loop has closed: nothing is counted any more

    def _release(self, size: int) -> None:
        self.queued -= size

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
