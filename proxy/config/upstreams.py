"""`upstreams:`, `routes:` and `identity:`: where an admitted call goes (route and
forward stages), and what tfgate tells the upstream about the caller."""

from __future__ import annotations

from typing import Literal

import pydantic
from pydantic import Field

from proxy.config.base import GRPC_MAX_MESSAGE, Address, FilePath, MiB, Section


class UpstreamTLS(Section):
    """TLS from tfgate to an upstream."""

    ca: FilePath = Field(description="CA bundle (PEM) to verify the upstream's certificate.")
    cert: FilePath | None = Field(None, description="Client certificate (PEM) tfgate presents.")
    key: FilePath | None = Field(None, description="Key (PEM) for `cert`.")
    server_name: str | None = Field(
        None, description="Name to verify in the upstream certificate (default: the host).")

    @pydantic.model_validator(mode="after")
    def _pair(self) -> UpstreamTLS:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key must be given together")
        return self


class Upstream(Section):
    """A server that tfgate forwards to. Its `kind` says which method family it serves."""

    address: Address = Field(description="host:port or unix:PATH of the upstream.")
    kind: Literal["serving", "cluster"] = Field(
        "serving", description="What the upstream is: `serving` (a TF Serving ModelServer) "
        "or `cluster` (a `tf.distribute.Server`: Worker, Master, Eager and Coordination "
        "services; see the `cluster` section).")
    tls: UpstreamTLS | None = Field(
        None, description="TLS to the upstream; omit for plaintext on an isolated network.")
    max_message_bytes: int = Field(
        256 * MiB, gt=0, le=GRPC_MAX_MESSAGE, description="Largest response accepted "
        "from upstream.")


class ModelRoute(Section):
    """Send calls for matching model names to a named upstream."""

    models: list[str] = Field(min_length=1, description="Model name globs (docs/identity.md: "
                              "`*` within a `/` segment, `**` across).")
    upstream: str = Field(description="Name of an entry in `upstreams`.")


class Identity(Section):
    """Passing the verified caller to the upstream."""

    forward_metadata_key: str | None = Field(
        None, description="Metadata key that carries the verified principal upstream; "
        "any copy the client sent is dropped first.")
    strip_metadata: list[str] = Field(
        default_factory=list, description="Extra client metadata keys never forwarded.")

    @pydantic.field_validator("forward_metadata_key")
    @classmethod
    def _lowercase(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if value != value.lower() or value.startswith((":", "grpc-")) or not value.isascii():
            raise ValueError("use a lowercase ASCII key that does not start with ':' or 'grpc-'")
        if value.endswith("-bin"):
            raise ValueError("a -bin key carries binary values; the principal is text")
        if value in ("authorization", "proxy-authorization", "cookie"):
            raise ValueError(f"{value!r} is a credential key, stripped before forwarding")
        return value
