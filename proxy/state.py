"""State: one config compiled into everything a call needs, built off to the side.

A call reads the server's current `State` once, when it starts, and uses only that
object, so a later reload (which builds a new State and swaps one reference) never
mixes two configs within a call. Building fails with ConfigError, never half-way.
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from proxy import config
from proxy.audit import AuditLog, open_sink
from proxy.authn import Authenticator
from proxy.authn.jwt import TokenVerifier
from proxy.authn.mtls import CertificateIdentities
from proxy.call import Facts
from proxy.errors import ConfigError, Reason, Reject
from proxy.forward import MetadataFilter, Upstream
from proxy.limits import Limiter
from proxy.policy import Policy


class UpstreamRouter:
    """Chooses the upstream by model name (first matching route), else the default."""

    def __init__(self, cfg: config.Config, upstreams: dict[str, Upstream]) -> None:
        self._routes = [(re.compile("|".join(fnmatch.translate(m) for m in r.models)),
                         upstreams[r.upstream]) for r in cfg.routes]
        default = cfg.upstream_for_default()
        self._default = upstreams[default] if default else None

    def upstream_for(self, facts: Facts) -> Upstream:
        model = facts.targets[0].name if facts.targets else None
        if model is not None:
            for pattern, upstream in self._routes:
                if pattern.fullmatch(model):
                    return upstream
        if self._default is None:
            raise Reject(grpc.StatusCode.NOT_FOUND, Reason.NO_UPSTREAM,
                         f'no upstream serves model "{model}"' if model else
                         "no default upstream for this method")
        return self._default


@dataclass(frozen=True)
class State:
    config: config.Config
    authenticator: Authenticator
    policy: Policy
    router: UpstreamRouter
    upstreams: dict[str, Upstream]
    metadata: MetadataFilter
    audit: AuditLog
    limits: Limiter  # also holds the rate/concurrency state and the outcome counters

    def close(self) -> None:
        for upstream in self.upstreams.values():
            upstream.close()
        self.audit.close()


def build_state(cfg: config.Config, clock: Callable[[], float] = time.monotonic) -> State:
    """`clock` drives the rate-limit token buckets (tests pass a fake one)."""
    tokens = TokenVerifier(cfg.authn.jwt) if cfg.authn.jwt else None
    policy = Policy(cfg.policy)
    upstreams: dict[str, Upstream] = {}
    for name, up in cfg.upstreams.items():
        try:
            upstreams[name] = Upstream(name, up)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"upstreams.{name}", f"cannot set up channel: {exc}") from None
    try:
        sink = open_sink(cfg.audit.output)
    except OSError as exc:
        raise ConfigError("audit.output", f"cannot open: {exc.strerror}") from None
    return State(
        config=cfg,
        authenticator=Authenticator(CertificateIdentities(), tokens),
        policy=policy,
        router=UpstreamRouter(cfg, upstreams),
        upstreams=upstreams,
        metadata=MetadataFilter(cfg.identity),
        audit=AuditLog(sink),
        limits=Limiter(cfg.limits, clock),
    )
