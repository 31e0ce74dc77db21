"""One tfgate process: its runtime, its listeners (fronts), config reload and stop.

`Service` starts every front on the process's event loop (`loop.py`) and stops them
together. `reload` (on SIGHUP, or when the file watcher sees the config file or a file it
names change) reads the config again and builds a new State and the listener's new TLS
material off to the side, over the same `Shared` parts; only if all of that succeeds does
it swap them in (`runtime.py`): calls in flight finish under the config they started with,
new TLS handshakes use the new certificates, and a config that fails leaves the old one in
force. Keys that only take effect at start (`RESTART_ONLY`) are kept as they were, and
the reload names them. Every reload, and the start, drain and stop, logs one line.

The fronts are the gRPC listener, the REST one with a `rest:` section (`rest/server.py`),
and, when `admin.enabled`, the admin listener (admin.py); the gRPC and admin listeners
answer health from one `Readiness`, which says "draining" as soon as stopping begins.
Before they start, each issuer whose keys come from a URL gets its first fetch (bounded by
its timeout), so the first tokens do not meet an empty key set.

Hooks for monitoring (metrics.py reads them): `reloads` counts outcomes (`ok`,
`refused`), `last_reload` is the latest `ReloadOutcome`, `reload_listeners` are called
with each outcome, and
`certificates()` lists every certificate in use with its expiry.
"""

from __future__ import annotations

import pathlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from proxy import metrics, oplog, watch
from proxy.admin import AdminServer
from proxy.config import Config, load_config
from proxy.counters import Counters
from proxy.errors import ConfigError
from proxy.loop import LoopThread
from proxy.readiness import Readiness
from proxy.runtime import Runtime
from proxy.server import AsyncServer
from proxy.state import State, build_state
from proxy.tls import CertificateInUse, ServerTLS, upstream_certificates

if TYPE_CHECKING:
    from proxy.rest.server import RestServer

log = oplog.get_logger()


class Front(Protocol):
    """A listener that serves calls from the runtime's current State."""

    address: str

    async def start(self) -> None: ...

    async def stop(self, grace: float | None) -> None: ...


# Keys a running process cannot change, with why (docs/operations.md): the socket is
# bound with them, or gRPC fixes them when the server and its credentials are made.
RESTART_ONLY = (
    "listen.address",                     # the bound socket
    "listen.plaintext",                   # insecure or secure port
    "listen.tls.client_auth",             # the credentials' client-certificate mode
    "listen.max_message_bytes",           # gRPC server options (channel arguments) ...
    "listen.max_connections",
    "listen.max_streams_per_connection",
    "listen.max_header_bytes",
    "listen.handshake_timeout_s",
    "listen.keepalive",                   # ... all of its keys
    "limits.table_size",                  # the workers' shared table, sized once
    "server.watch_interval_s",            # the watcher's period
    "admin.enabled",                      # the admin listener's socket
    "admin.address",
    # the REST listener's socket and server (of `rest:`, only the body caps, JSON bounds
    # and upstream mode follow a reload; a section added or removed is restart-only)
    "rest.address", "rest.tls", "rest.plaintext", "rest.max_connections",
    "rest.max_header_bytes", "rest.max_headers", "rest.idle_timeout_s",
    "rest.handshake_timeout_s", "rest.receive_timeout_s", "rest.max_calls",
    "rest.max_calls_per_peer", "rest.max_buffered_bytes", "rest.parse",
)


def _value(cfg: Config, key: str) -> object:
    value: object = cfg
    for name in key.split("."):
        value = getattr(value, name, None)
    return value


def restart_only_changes(old: Config, new: Config) -> list[str]:
    """The restart-only keys whose value differs between two configs; an optional section
    added or removed (`rest`) counts as its own key."""
    changed = []
    for key in RESTART_ONLY:
        section = key.split(".")[0]
        if (getattr(old, section) is None) != (getattr(new, section) is None):
            changed.append(section)
        elif _value(old, key) != _value(new, key):
            changed.append(key)
    return list(dict.fromkeys(changed))


@dataclass(frozen=True)
class ReloadOutcome:
    """What one reload did. `key`/`error`: why it was refused; `restart_only`: keys it
    changed that wait for a restart; `config`: the config now in force (when ok)."""

    ok: bool
    trigger: str  # "signal", "watch" or "call"
    key: str | None = None
    error: str | None = None
    restart_only: tuple[str, ...] = ()
    config: Config | None = None
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class _Candidate:
    state: State
    tls: ServerTLS | None
    certificates: list[CertificateInUse]


class Service:
    def __init__(self, cfg: Config, runtime: Runtime | None = None, *,
                 config_path: pathlib.Path | None = None, reuse_port: bool = False) -> None:
        self.config = cfg  # what the listener was started with (the restart-only keys)
        self.config_path = config_path
        self._baseline = watch.fingerprint([config_path, *cfg.files()] if config_path else [])
        self.runtime = runtime or Runtime.from_config(cfg)
        self.readiness = Readiness(self.runtime, timeout_s=cfg.admin.readiness_timeout_s,
                                   cache_s=cfg.admin.readiness_cache_s)
        self.grpc = AsyncServer(cfg, self.runtime, reuse_port=reuse_port,
                                readiness=self.readiness)
        self.fronts: list[Front] = [self.grpc]
        self.rest: RestServer | None = None
        if cfg.rest is not None:
            from proxy.rest.server import RestServer  # aiohttp only where REST is served

            self.rest = RestServer(cfg, self.runtime, reuse_port=reuse_port)
            self.fronts.append(self.rest)
        # The admin listener last: `/readyz` answers only once every data front is bound.
        self.admin: AdminServer | None = None
        if cfg.admin.enabled:
            self.admin = AdminServer(cfg.admin, self.readiness, reuse_port=reuse_port)
            self.fronts.append(self.admin)
        self.reloads = Counters()
        self.last_reload: ReloadOutcome | None = None
        self.reload_listeners: list[Callable[[ReloadOutcome], None]] = []
        self._certificates: list[CertificateInUse] = []
        self._loop = LoopThread.shared()
        self._reloading = threading.Lock()  # one reload at a time
        self._swap_lock = threading.Lock()  # a swap and the stop exclude each other
        self._stopping = False
        self._watcher: watch.Watcher | None = None

    @property
    def address(self) -> str:
        return self.grpc.address

    def start(self) -> Service:
        for keys in self.runtime.state.remote_keys:
            keys.wait_first()
        try:
            for front in self.fronts:
                self._loop.run(front.start())
            self._certificates = self._inventory(self.config, None)
        except BaseException:
            self.stop(0)
            raise
        metrics.CERTIFICATES.track(metrics.certificate_files(self.config))
        if self.admin is not None:
            log.info("admin listener", address=self.admin.address,
                     paths=["/healthz", "/readyz", "/metrics"])
        interval = self.config.server.watch_interval_s
        if self.config_path is not None and interval:
            self._watcher = watch.Watcher(interval, self._files_changed)
            self._watcher.watch(self._baseline)
            self._watcher.start()
        return self

    def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let calls in flight finish for up to `grace` s, cancel the
        rest, close everything. A reload still running is abandoned."""
        with self._swap_lock:
            self._stopping = True
        self.readiness.drain()
        if self._watcher is not None:
            self._watcher.stop()
        for front in self.fronts:
            self._loop.run(front.stop(grace))
        with self._swap_lock:
            self.runtime.close()

    def wait(self) -> None:
        self._loop.run(self.grpc.wait())

    def certificates(self) -> list[CertificateInUse]:
        """Every certificate in use (server chain, client CA, upstream CA and client
        certificates), as of the last start or reload; `seconds_left()` each."""
        return list(self._certificates)

    # -- reload ----------------------------------------------------------------------

    def reload(self, trigger: str = "call") -> bool:
        """Load the config file again and swap it in; False (old config kept) if it is
        refused, or when there is no file or the process is stopping."""
        unexpected: Exception | None = None
        with self._reloading:
            try:
                outcome = self._reload(trigger)
            except Exception as exc:  # noqa: BLE001 - a bug: refuse, keep the old config
                unexpected = exc
                outcome = ReloadOutcome(False, trigger, error=f"internal error: {exc!r}")
        if outcome is None:
            return False
        self.reloads.add("ok" if outcome.ok else "refused")
        metrics.reload_finished(outcome.ok)
        if outcome.ok and outcome.config is not None:
            metrics.CERTIFICATES.track(metrics.certificate_files(outcome.config))
        self.last_reload = outcome
        _log_reload(outcome, self.config_path, unexpected)
        for listener in list(self.reload_listeners):
            try:
                listener(outcome)
            except Exception as exc:
                log.error("reload listener failed", exc_info=exc)
        return outcome.ok

    def _files_changed(self, changed: list[pathlib.Path]) -> None:
        log.debug("files changed", files=[str(path) for path in changed])
        self.reload("watch")

    def _reload(self, trigger: str) -> ReloadOutcome | None:
        if self.config_path is None or self._stopping:
            return None
        baseline = watch.fingerprint([self.config_path])  # before anything is read
        cfg: Config | None = None
        try:
            cfg = load_config(self.config_path)
            baseline.update(watch.fingerprint(cfg.files()))
            candidate = self._candidate(cfg)
        except ConfigError as exc:
            if cfg is None:  # unparsable: keep watching the running config's files
                baseline.update(watch.fingerprint(self.runtime.state.config.files()))
            self._watch(baseline)
            return ReloadOutcome(False, trigger, key=exc.path or None, error=exc.problem)
        with self._swap_lock:
            if self._stopping:
                candidate.state.close()
                return None
            self.runtime.swap(candidate.state, candidate.tls)
            self._certificates = candidate.certificates
        self._loop.loop.call_soon_threadsafe(self.grpc.bounds.configure, cfg.listen)
        self._watch(baseline)
        return ReloadOutcome(True, trigger, restart_only=tuple(
            restart_only_changes(self.config, cfg)), config=cfg)

    def _candidate(self, cfg: Config) -> _Candidate:
        """Everything a config needs, built and checked off to the side (ConfigError)."""
        state = build_state(cfg, self.runtime.shared)
        try:
            tls = self.runtime.load_tls(cfg)
            return _Candidate(state, tls, self._inventory(cfg, tls))
        except BaseException:
            state.close()
            raise

    def _inventory(self, cfg: Config, tls: ServerTLS | None) -> list[CertificateInUse]:
        server = tls or self.runtime.server_tls
        return (server.certificates() if server else []) + upstream_certificates(cfg)

    def _watch(self, baseline: watch.Fingerprint) -> None:
        if self._watcher is not None:
            self._watcher.watch(baseline)


def _log_reload(outcome: ReloadOutcome, path: pathlib.Path | None,
                unexpected: Exception | None) -> None:
    """The reload's one line: refused (naming the key at fault), ok, or ok with keys
    that wait for a restart."""
    if not outcome.ok:
        key = {} if outcome.key is None else {"key": outcome.key}
        log.error("reload", outcome="refused", trigger=outcome.trigger, config=str(path),
                  **key, error=outcome.error, exc_info=unexpected)
    elif outcome.restart_only:
        log.warning("reload", outcome="ok", trigger=outcome.trigger, config=str(path),
                    restart_only=list(outcome.restart_only))
    else:
        log.info("reload", outcome="ok", trigger=outcome.trigger, config=str(path))
