"""One tfgate process: its runtime, its listeners (fronts), and config reload.

`Service` starts every front on the process's event loop (`loop.py`) and stops them
together. `reload` reads the config file again and builds a new State off to the side
over the same `Shared` parts; only if that succeeds does it swap it in (`runtime.py`):
calls in flight finish under the config they started with, and a config that fails to
load leaves the old one in force. Keys that only take effect at start (where the
listener binds) are kept as they were, and the reload says so.

The fronts are the gRPC listener and, when `admin.enabled`, the admin listener
(admin.py); both answer health from one `Readiness`, which says "draining" as soon as
stopping begins. Before they start, each issuer whose keys come from a URL gets its
first fetch (bounded by its timeout), so the first tokens do not meet an empty key set.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Protocol

from proxy import metrics
from proxy.admin import AdminServer
from proxy.config import Config, load_config
from proxy.errors import ConfigError
from proxy.loop import LoopThread
from proxy.readiness import Readiness
from proxy.runtime import Runtime
from proxy.server import AsyncServer
from proxy.state import build_state

log = logging.getLogger("tfgate")


class Front(Protocol):
    """A listener that serves calls from the runtime's current State."""

    address: str

    async def start(self) -> None: ...

    async def stop(self, grace: float | None) -> None: ...


# Keys a running process cannot change: the sockets are bound with them.
RESTART_ONLY = ("listen.address", "listen.plaintext", "listen.max_message_bytes",
                "admin.enabled", "admin.address")


def restart_only_changes(old: Config, new: Config) -> list[str]:
    """The restart-only keys whose value differs between two configs."""
    changed = []
    for key in RESTART_ONLY:
        section, name = key.split(".")
        if getattr(getattr(old, section), name) != getattr(getattr(new, section), name):
            changed.append(key)
    return changed


class Service:
    def __init__(self, cfg: Config, runtime: Runtime | None = None, *,
                 config_path: pathlib.Path | None = None, reuse_port: bool = False) -> None:
        self.config = cfg
        self.config_path = config_path
        self.runtime = runtime or Runtime.from_config(cfg)
        self.readiness = Readiness(self.runtime, timeout_s=cfg.admin.readiness_timeout_s,
                                   cache_s=cfg.admin.readiness_cache_s)
        self.grpc = AsyncServer(cfg, self.runtime, reuse_port=reuse_port,
                                readiness=self.readiness)
        self.fronts: list[Front] = [self.grpc]
        self.admin: AdminServer | None = None
        if cfg.admin.enabled:
            self.admin = AdminServer(cfg.admin, self.readiness, reuse_port=reuse_port)
            self.fronts.append(self.admin)
        self._loop = LoopThread.shared()

    @property
    def address(self) -> str:
        return self.grpc.address

    def start(self) -> Service:
        for keys in self.runtime.state.remote_keys:
            keys.wait_first()
        metrics.CERTIFICATES.track(metrics.certificate_files(self.config))
        try:
            for front in self.fronts:
                self._loop.run(front.start())
        except BaseException:
            self.stop(0)
            raise
        if self.admin is not None:
            log.info("admin listener on %s (/healthz, /readyz, /metrics)", self.admin.address)
        return self

    def stop(self, grace: float | None = None) -> None:
        self.readiness.drain()
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
            metrics.reload_finished(False)
            return False
        kept = restart_only_changes(self.config, cfg)
        if kept:
            log.warning("reload: %s changed but take effect only at restart", ", ".join(kept))
        self.runtime.swap(state)
        metrics.reload_finished(True)
        metrics.CERTIFICATES.track(metrics.certificate_files(cfg))
        log.info("reloaded %s", self.config_path)
        return True
