"""State: one config compiled into everything a call needs, built off to the side.

A call takes the runtime's current `State` once, when it starts, and uses only that
object, so a reload (which builds a new State and swaps one reference, `runtime.py`)
never mixes two configs within a call. Building fails with ConfigError, never half-way.
What must outlive a config (limit state, counters) comes in as `Shared`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from proxy import config
from proxy.audit import AuditLog, open_sink
from proxy.authn import Authenticator
from proxy.authn.jwt import TokenVerifier
from proxy.authn.mtls import CertificateIdentities
from proxy.authn.remote_jwks import KeySets, RemoteKeySet
from proxy.call import Principal
from proxy.cluster_guard import ClusterGuard
from proxy.counters import Counters
from proxy.errors import ConfigError
from proxy.forward import Upstream
from proxy.handles import HandleTable
from proxy.limits import Limiter, LimitState, LimitStore
from proxy.metadata import MetadataFilter
from proxy.metrics import Labels
from proxy.policy import Policy
from proxy.routing import MethodTable, UpstreamRouter
from proxy.shadow import Shadow

if TYPE_CHECKING:
    from proxy.rest.upstream import RestUpstreams


@dataclass
class Shared:
    """What every State of one process shares: limit state, outcome counters and the
    issuers' fetched keys, and the owners of distributed-TF handles. The limit state is
    this process's own (`LimitState`), or under `serve --workers N` one table all workers
    share (`shared_limits.SharedLimitState`, built by `cli.py`). The handle table is always
    this process's own: cluster upstreams are served by one process (`cli.py`)."""

    limits: LimitStore = field(default_factory=LimitState)
    outcomes: Counters = field(default_factory=Counters)  # every call, by Reason value
    key_sets: KeySets = field(default_factory=KeySets)
    handles: HandleTable = field(default_factory=HandleTable)


@dataclass(frozen=True, eq=False)  # compared and hashed by identity (runtime.py)
class State:
    config: config.Config
    shared: Shared
    methods: MethodTable
    authenticator: Authenticator
    policy: Policy
    router: UpstreamRouter
    upstreams: dict[str, Upstream]
    metadata: MetadataFilter
    audit: AuditLog | None
    limits: Limiter
    cluster: ClusterGuard
    shadow: Shadow | None = None
    labels: Labels = field(default_factory=lambda: Labels((), ()))
    remote_keys: tuple[RemoteKeySet, ...] = ()
    rest: RestUpstreams | None = None  # the REST front's upstreams, with `rest:` only

    def close(self) -> None:
        if self.rest is not None:
            self.rest.close()
        for upstream in self.upstreams.values():
            upstream.close()
        if self.audit is not None:
            self.audit.close()
        for keys in self.remote_keys:
            self.shared.key_sets.release(keys)


def build_state(cfg: config.Config, shared: Shared | None = None, *, connect: bool = True,
                methods: MethodTable | None = None,
                clock: Callable[[], float] = time.monotonic) -> State:
    """`connect=False` (explain) builds no upstream channels and opens no audit sink.
    `methods` replaces the table built from the upstreams' families (tests add methods
    this way); `clock` drives the rate-limit token buckets (tests pass a fake one)."""
    shared = shared or Shared()
    methods = methods or MethodTable.for_config(cfg)
    policy = Policy(cfg.policy, methods, cfg.cluster)
    shadow = (Shadow(cfg.shadow_policy, methods, cfg.cluster)
              if cfg.shadow_policy is not None else None)
    remote = _remote_keys(cfg, shared) if connect else {}
    try:
        tokens = TokenVerifier(cfg.authn.jwt, remote=remote) if cfg.authn.jwt else None
        upstreams = _upstreams(cfg) if connect else {}
    except ConfigError:
        _release(shared, remote.values())
        raise
    audit: AuditLog | None = None
    try:
        audit = _audit(cfg) if connect else None
        rest = _rest(cfg, upstreams, methods) if connect and cfg.rest else None
    except ConfigError:
        if audit is not None:
            audit.close()
        for made in upstreams.values():
            made.close()
        _release(shared, remote.values())
        raise
    return State(
        config=cfg,
        shared=shared,
        methods=methods,
        authenticator=Authenticator(CertificateIdentities(), tokens,
                                    token_required=cfg.token_required(), local=_local(cfg)),
        policy=policy,
        router=UpstreamRouter(cfg),
        upstreams=upstreams,
        metadata=MetadataFilter(cfg.identity),
        audit=audit,
        limits=Limiter(cfg.limits, shared.limits, clock),
        shadow=shadow,
        labels=Labels(methods.methods, _model_names(cfg)),
        remote_keys=tuple(remote.values()),
        rest=rest,
        cluster=ClusterGuard(cfg.cluster, shared.handles),
    )


def _rest(cfg: config.Config, upstreams: dict[str, Upstream],
          methods: MethodTable) -> RestUpstreams:
    from proxy.rest.upstream import RestUpstreams  # aiohttp only where REST is served

    return RestUpstreams(cfg, upstreams, methods)


def _local(cfg: config.Config) -> Principal | None:
    """The fixed identity of a plaintext egress listener's callers, if it has one."""
    spiffe = cfg.listen.local_identity
    return None if spiffe is None else Principal(spiffe_id=spiffe, has_certificate=True)


def _upstreams(cfg: config.Config) -> dict[str, Upstream]:
    upstreams: dict[str, Upstream] = {}
    for name, up in cfg.upstreams.items():
        try:
            upstreams[name] = Upstream(name, up)
        except (OSError, ValueError) as exc:
            for made in upstreams.values():
                made.close()
            raise ConfigError(f"upstreams.{name}", f"cannot set up channel: {exc}") from None
    return upstreams


def _audit(cfg: config.Config) -> AuditLog:
    try:
        return AuditLog(open_sink(cfg.audit.output), cfg.audit.unauthenticated_per_s)
    except OSError as exc:
        raise ConfigError("audit.output", f"cannot open: {exc.strerror}") from None


def _remote_keys(cfg: config.Config, shared: Shared) -> dict[str, RemoteKeySet]:
    """The fetched key sets of issuers whose keys come from a URL (shared across reloads)."""
    issuers = cfg.authn.jwt.issuers if cfg.authn.jwt else []
    acquired: dict[str, RemoteKeySet] = {}
    try:
        for issuer in issuers:
            if issuer.remote():
                acquired[issuer.issuer] = shared.key_sets.acquire(issuer)
    except ConfigError:
        _release(shared, acquired.values())
        raise
    return acquired


def _release(shared: Shared, keys: Iterable[RemoteKeySet]) -> None:
    for keyset in keys:
        shared.key_sets.release(keyset)


def _model_names(cfg: config.Config) -> list[str]:
    """Every model pattern the config writes (metrics keep the literal ones as labels)."""
    rules = [*cfg.policy.rules, *(cfg.shadow_policy.rules if cfg.shadow_policy else [])]
    return [m for r in rules for m in r.models] + [m for r in cfg.routes for m in r.models]
