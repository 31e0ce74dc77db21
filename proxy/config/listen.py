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


class Keepalive(Section):
    """HTTP/2 connection upkeep: what tfgate tolerates from clients and how it finds dead
    or idle connections (gRPC core enforces these)."""

    min_client_ping_interval_s: float = Field(
        10, ge=1, description="A client ping sooner than this after the previous one is a "
        "strike; after `max_ping_strikes` the connection is closed (GOAWAY "
        "ENHANCE_YOUR_CALM). Pings without calls in flight always count as strikes.")
    max_ping_strikes: int = Field(
        2, ge=1, description="Strikes tolerated before a connection is closed.")
    time_s: float = Field(
        60, gt=0, description="tfgate pings a connection that was quiet this long ...")
    timeout_s: float = Field(
        20, gt=0, description="... and closes it when the ping is not answered in this time.")
    max_idle_s: float | None = Field(
        300, gt=0, description="Close a connection with no call for this long. Null: never.")
    max_age_s: float | None = Field(
        None, gt=0, description="Close every connection after this age (GOAWAY, then "
        "`max_age_grace_s` for calls in flight). Null (default): never, because a TF "
        "client's StreamingEnqueue lives as long as the client.")
    max_age_grace_s: float = Field(
        60, ge=0, description="Time calls in flight get after a max-age GOAWAY.")


def check_transport(address: str, plaintext: bool, tls: ListenTLS | None) -> None:
    """A listener has TLS, or is plaintext on loopback or a unix socket: nothing else."""
    if plaintext and tls is not None:
        raise ValueError("set either tls or plaintext: true, not both")
    if tls is None and not plaintext:
        raise ValueError("tls is required (plaintext: true is allowed only on loopback "
                         "or a unix socket)")
    if plaintext and not is_loopback(address):
        raise KeyProblem(("plaintext",), f"plaintext listener refused on non-loopback "
                         f"address {address!r}; use tls, 127.0.0.1, ::1 or unix:PATH")


class Listen(Section):
    """Where tfgate accepts calls, and the bounds every client meets before it has
    authenticated (docs/hostile-networks.md)."""

    address: Address = Field("127.0.0.1:8443", description="host:port or unix:PATH.")
    tls: ListenTLS | None = Field(None, description="TLS settings; required unless plaintext.")
    plaintext: bool = Field(
        False, description="Serve without TLS. Only allowed on loopback or a unix socket.")
    local_identity: str | None = Field(
        None, description="Egress mode: the SPIFFE ID every caller of this plaintext "
        "listener is taken to be (it counts as a certificate identity). For a local TF "
        "process that cannot do TLS (TF clients send no credentials at all); whoever can "
        "reach the listener is that identity, so only with `plaintext: true`, hence only "
        "on loopback or a unix socket: prefer a unix socket or a network namespace of "
        "its own (a pod).")
    max_message_bytes: int = Field(
        64 * MiB, gt=0, le=GRPC_MAX_MESSAGE,
        description="Largest request message accepted, checked by gRPC before tfgate "
        "reads it, on the decompressed size for gzip/deflate messages (grpcio stops "
        "inflating at the cap); a larger one fails with gRPC's RESOURCE_EXHAUSTED, and "
        "tfgate, which sees the call end without its message, audits it as "
        "malformed-request.")
    max_calls: int = Field(
        4096, ge=1, le=1_000_000, description="Calls in flight per process, counted by "
        "tfgate from their headers; more are refused with RESOURCE_EXHAUSTED (reason "
        "overloaded).")
    max_connections: int = Field(
        1024, ge=1, description="Open client connections per process; more are closed at "
        "once by gRPC.")
    max_streams_per_connection: int = Field(
        100, ge=1, le=2**31 - 1, description="HTTP/2 streams one connection may have open "
        "(SETTINGS_MAX_CONCURRENT_STREAMS); more are refused with REFUSED_STREAM.")
    max_calls_per_peer: int = Field(
        512, ge=1, description="Calls in flight from one peer IP address, whatever its "
        "credentials; more are refused with RESOURCE_EXHAUSTED.")
    receive_timeout_s: float = Field(
        10, gt=0, le=3600, description="A unary call's request message must have arrived "
        "completely this long after its headers, else DEADLINE_EXCEEDED.")
    max_buffered_bytes: int = Field(
        512 * MiB, ge=0, description="Request bytes tfgate may hold at once per process "
        "(received, not yet forwarded); a message that would pass it is refused with "
        "RESOURCE_EXHAUSTED.")
    max_header_bytes: int = Field(
        16 * 1024, ge=1024, le=1024 * 1024, description="Largest metadata (headers) of a "
        "call; larger are refused by gRPC.")
    handshake_timeout_s: float = Field(
        5, gt=0, le=600, description="Time a TLS handshake may take.")
    keepalive: Keepalive = Field(default_factory=Keepalive, description="Connection upkeep.")

    @pydantic.model_validator(mode="after")
    def _tls_or_loopback(self) -> Listen:
        check_transport(self.address, self.plaintext, self.tls)
        if self.local_identity is not None:
            from proxy.authn.mtls import is_spiffe_id

            if not self.plaintext:
                raise KeyProblem(("local_identity",), "only for a plaintext listener (on "
                                 "loopback or a unix socket): with TLS, callers prove who "
                                 "they are")
            if not is_spiffe_id(self.local_identity):
                raise KeyProblem(("local_identity",), "must be a SPIFFE ID, e.g. "
                                 "spiffe://example.org/ns/train/sa/client")
        return self

    def requires_certificates(self) -> bool:
        """Whether every caller comes with a certificate identity (or the local one)."""
        if self.local_identity is not None:
            return True
        return self.tls is not None and self.tls.client_auth == "require"
