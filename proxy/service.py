"""One tfgate process: its runtime, its listeners (fronts), and config reload.

`Service` starts every front on the process's event loop (`loop.py`) and stops them
together: the gRPC listener (`server.py`) and, with a `rest:` section, the REST one
(`rest/server.py`). `reload` reads the config file again and builds a new State off to the side
over the same `Shared` parts; only if that succeeds does it swap it in (`runtime.py`):
calls in flight finish under the config they started with, and a config that fails to
load leaves the old one in force. Keys that only take effect at start (where the
listener binds) are kept as they were, and the reload says so.
"""

from __future__ import annotations

import logging
import pathlib
from typing import TYPE_CHECKING, Protocol

from proxy.config import Config, load_config
from proxy.errors import ConfigError
from proxy.loop import LoopThread
from proxy.runtime import Runtime
from proxy.server import AsyncServer
from proxy.state import build_state

if TYPE_CHECKING:
    from proxy.rest.server import RestServer

log = logging.getLogger("tfgate")


class Front(Protocol):
    """A listener that serves calls from the runtime's current State."""

    address: str

    async def start(self) -> None: ...

    async def stop(self, grace: float | None) -> None: ...


# Keys a running process cannot change: the sockets are bound with them. Of `rest:`,
# only the body caps, JSON bounds and upstream mode follow a reload.
RESTART_ONLY = ("listen.address", "listen.plaintext", "listen.max_message_bytes",
                "rest.address", "rest.tls", "rest.plaintext", "rest.max_connections",
                "rest.max_header_bytes", "rest.max_headers", "rest.idle_timeout_s",
                "rest.handshake_timeout_s", "rest.receive_timeout_s", "rest.max_calls",
                "rest.max_calls_per_peer", "rest.max_buffered_bytes", "rest.parse")


def restart_only_changes(old: Config, new: Config) -> list[str]:
    """The restart-only keys whose value differs between two configs (a section added
    or removed counts as its own key)."""
    changed = []
    for key in RESTART_ONLY:
        section, name = key.split(".")
        before, after = getattr(old, section), getattr(new, section)
        if (before is None) != (after is None):
            changed.append(section)
        elif before is not None and getattr(before, name) != getattr(after, name):
            changed.append(key)
    return list(dict.fromkeys(changed))


class Service:
    def __init__(self, cfg: Config, runtime: Runtime | None = None, *,
                 config_path: pathlib.Path | None = None, reuse_port: bool = False) -> None:
        self.config = cfg
        self.config_path = config_path
        self.runtime = runtime or Runtime.from_config(cfg)
        self.grpc = AsyncServer(cfg, self.runtime, reuse_port=reuse_port)
        self.fronts: list[Front] = [self.grpc]
        self.rest: RestServer | None = None
        if cfg.rest is not None:
            from proxy.rest.server import RestServer  # aiohttp only where REST is served

            self.rest = RestServer(cfg, self.runtime, reuse_port=reuse_port)
            self.fronts.append(self.rest)
        self._loop = LoopThread.shared()

    @property
    def address(self) -> str:
        return self.grpc.address

    def start(self) -> Service:
        try:
            for front in self.fronts:
                self._loop.run(front.start())
        except BaseException:
            self.stop(0)
            raise
        return self

    def stop(self, grace: float | None = None) -> None:
        for front in self.fronts:
            self._loop.run(front.stop(grace))
        self.runtime.close()

    def wait(self) -> None:
        self._loop.run(self.grpc.wait())

    def reload(self) -> bool:
        """Load the config file again and swap it in; False (old config kept) on error."""
        if self.config_path is None:
            return False
        try:
            cfg = load_config(self.config_path)
            state = build_state(cfg, self.runtime.shared)
        except (ConfigError, OSError) as exc:
            log.error("reload refused, the running config stays in force: %s", exc)
            return False
        kept = restart_only_changes(self.config, cfg)
        if kept:
            log.warning("reload: %s changed but take effect only at restart", ", ".join(kept))
        self.runtime.swap(state)
        log.info("reloaded %s", self.config_path)
        return True
