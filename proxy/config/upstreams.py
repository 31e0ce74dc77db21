"""`upstreams:`, `routes:` and `identity:`: where an admitted call goes (route and
forward stages), and what tfgate tells the upstream about the caller."""

from __future__ import annotations

import re
from typing import Literal

import pydantic
from pydantic import Field

from proxy.config.base import GRPC_MAX_MESSAGE, Address, FilePath, MiB, Section
from proxy.config.rest import check_rest_url


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
    rest_address: str | None = Field(
        None, description="The upstream's REST base URL (`http://host:port`; `https://` "
        "verifies it with `tls.ca` and presents `tls.cert`), for `rest.upstream: native`.")

    @pydantic.field_validator("rest_address")
    @classmethod
    def _rest_url(cls, value: str | None) -> str | None:
        return check_rest_url(value)


class ModelRoute(Section):
    """Send calls for matching model names to a named upstream."""

    models: list[str] = Field(min_length=1, description="Model name globs (docs/identity.md: "
                              "`*` within a `/` segment, `**` across).")
    upstream: str = Field(description="Name of an entry in `upstreams`.")


# Client metadata that never goes upstream, whatever the config (metadata.py), in any
# case and in its `-bin` form: credentials, and connection-level (hop-by-hop) headers.
CREDENTIAL_KEYS = frozenset({"authorization", "proxy-authorization", "cookie"})
HOP_BY_HOP_KEYS = frozenset({"connection", "keep-alive", "proxy-connection", "te",
                             "transfer-encoding", "upgrade", "host", "user-agent"})
# A metadata key as HTTP/2 and gRPC allow it: lowercase token characters.
_KEY = re.compile(r"[0-9a-z_.-]+")


def metadata_base_key(key: str) -> str:
    """The key a metadata entry is compared by: lowercase, `_` read as `-`, without
    `-bin` (gRPC's marker of a binary value), so `X-Secret`, `x_secret` and
    `x-secret-bin` are one. HTTP servers that map headers to CGI/WSGI names (and some
    proxies) read `x_secret` as `x-secret`, so an upstream may too (docs/wire-facts.md
    §4)."""
    return key.lower().replace("_", "-").removesuffix("-bin")


class Identity(Section):
    """Passing the verified caller to the upstream."""

    forward_metadata_key: str | None = Field(
        None, description="Metadata key that carries the verified principal upstream; "
        "any copy the client sent (in any case, with `_` for `-`, or as `KEY-bin`) is "
        "dropped first. "
        "Lowercase, not `-bin`, not a credential, connection or `grpc-` key.")
    strip_metadata: list[str] = Field(
        default_factory=list, description="Extra client metadata keys never forwarded, "
        "matched in any case, with `_` for `-`, and in their `-bin` form too.")

    @pydantic.field_validator("forward_metadata_key")
    @classmethod
    def _identity_key(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if value.endswith("-bin"):
            raise ValueError("a -bin key carries binary values; the principal is text")
        if _KEY.fullmatch(value) is None or value.startswith("grpc-"):
            raise ValueError("use a lowercase key of a-z, 0-9, '-', '_' and '.' that does "
                             "not start with 'grpc-'")
        base = metadata_base_key(value)  # `proxy_authorization` reads as the credential
        if base in CREDENTIAL_KEYS:
            raise ValueError(f"{value!r} is a credential key, stripped before forwarding")
        if base in HOP_BY_HOP_KEYS:
            raise ValueError(f"{value!r} is a connection header, never forwarded")
        return value

    @pydantic.field_validator("strip_metadata")
    @classmethod
    def _strip_keys(cls, value: list[str]) -> list[str]:
        for key in value:
            if _KEY.fullmatch(key.lower()) is None:
                raise ValueError(f"{key!r} is not a metadata key (letters, digits, '-', "
                                 "'_' and '.')")
        return value
