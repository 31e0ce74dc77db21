"""`listen:` where tfgate accepts calls, and the TLS that guards it (transport stage)."""

from __future__ import annotations

from typing import Literal

import pydantic
from pydantic import Field

from proxy.config.base import (
    GRPC_MAX_MESSAGE,
    Address,
    FilePath,
    KeyProblem,
    MiB,
    Section,
    is_loopback,
)


class ListenTLS(Section):
    """TLS on the client-facing listener."""

    cert: FilePath = Field(description="Server certificate chain (PEM).")
    key: FilePath = Field(description="Server private key (PEM).")
    client_ca: FilePath | None = Field(
        None, description="CA bundle (PEM) that client certificates must chain to.")
    # No "optional": gRPC Python can only require a client certificate or not ask for
    # one, so an optional mode would silently never see certificates.
    client_auth: Literal["require", "none"] = Field(
        "require",
        description="`require`: mTLS, the default. `none`: TLS without client "
        "certificates, allowed only when every rule requires a token.")

    @pydantic.model_validator(mode="after")
    def _ca_needed(self) -> ListenTLS:
        if self.client_auth == "require" and self.client_ca is None:
            raise KeyProblem(("client_ca",),
                             f"required when client_auth is {self.client_auth!r}")
        return self


class Listen(Section):
    """Where tfgate accepts calls."""

    address: Address = Field("127.0.0.1:8443", description="host:port or unix:PATH.")
    tls: ListenTLS | None = Field(None, description="TLS settings; required unless plaintext.")
    plaintext: bool = Field(
        False, description="Serve without TLS. Only allowed on loopback or a unix socket.")
    max_message_bytes: int = Field(
        64 * MiB, gt=0, le=GRPC_MAX_MESSAGE,
        description="Largest request message accepted, checked by gRPC before any stage "
        "runs, on the decompressed size for gzip/deflate messages (grpcio stops inflating "
        "at the cap); larger ones fail with RESOURCE_EXHAUSTED and are not audited.")

    @pydantic.model_validator(mode="after")
    def _tls_or_loopback(self) -> Listen:
        if self.plaintext and self.tls is not None:
            raise ValueError("set either tls or plaintext: true, not both")
        if self.tls is None and not self.plaintext:
            raise ValueError("tls is required (plaintext: true is allowed only on loopback "
                             "or a unix socket)")
        if self.plaintext and not is_loopback(self.address):
            raise KeyProblem(("plaintext",), f"plaintext listener refused on non-loopback "
                             f"address {self.address!r}; use tls, 127.0.0.1, ::1 or unix:PATH")
        return self

    def requires_certificates(self) -> bool:
        return self.tls is not None and self.tls.client_auth == "require"
