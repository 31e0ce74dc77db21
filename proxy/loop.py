"""One event loop per process for the data plane, in a background thread.

grpc.aio binds its objects to the loop they are made on, and one loop per process is the
supported way to use it, so every listener and upstream channel of a process lives on
this one. Ordinary code (the CLI's main thread, tests) drives it with `run`. uvloop is
used when installed (cheaper per call).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, ClassVar, TypeVar

T = TypeVar("T")


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class LoopThread:
    _shared: ClassVar[LoopThread | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        self.loop = new_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(ready,), name="tfgate-loop",
                                        daemon=True)
        self._thread.start()
        ready.wait()

    @classmethod
    def shared(cls) -> LoopThread:
        with cls._lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def _main(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the loop and wait for its result (from another thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def in_loop(self) -> bool:
        return threading.current_thread() is self._thread
