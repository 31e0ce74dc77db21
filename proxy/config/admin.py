"""`admin:` the operator's listener: health (`/healthz`, `/readyz`) and Prometheus metrics
(`/metrics`), plaintext HTTP on its own address (proxy/admin.py).

It carries no credentials check, so it listens on loopback unless the config says
otherwise in so many words (`allow_non_loopback: true`): a Kubernetes kubelet probes
from the node, which needs `0.0.0.0:PORT`, and then anyone who can reach that port can
read the metrics (method names, model names named in the config, reasons, rates) and
the readiness answer. It is off by default: a fixed default port would make two
instances on one host collide, and a failed bind stops tfgate.
"""

from __future__ import annotations

import pydantic
from pydantic import Field

from proxy.config.base import Address, KeyProblem, Section, is_loopback, parse_address


class Admin(Section):
    """Health and metrics over plaintext HTTP (docs/operations.md)."""

    enabled: bool = Field(False, description="Serve the admin listener.")
    address: Address = Field(
        "127.0.0.1:9901", description="host:port (TCP only). A non-loopback host such as "
        "0.0.0.0 (Kubernetes probes) needs `allow_non_loopback: true`.")
    allow_non_loopback: bool = Field(
        False, description="Allow a non-loopback address: whoever reaches it reads metrics "
        "and readiness without credentials (docs/operations.md, Health).")
    readiness_timeout_s: float = Field(
        1.0, gt=0, le=30, description="How long a readiness probe waits for each upstream "
        "channel to connect (also used by the gRPC health service).")
    readiness_cache_s: float = Field(
        1.0, ge=0, le=60, description="A readiness answer is reused this long, so probes "
        "cannot multiply the load on the upstreams.")

    @pydantic.model_validator(mode="after")
    def _loopback_unless_allowed(self) -> Admin:
        kind, _, _ = parse_address(self.address)
        if kind != "tcp":
            raise KeyProblem(("address",), "the admin listener takes host:port, not a unix socket")
        if not is_loopback(self.address) and not self.allow_non_loopback:
            raise KeyProblem(("address",), f"{self.address!r} is not loopback: the admin "
                             "listener is plaintext and unauthenticated; set "
                             "allow_non_loopback: true to expose it (docs/operations.md)")
        return self
