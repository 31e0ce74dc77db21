"""`rest:` the REST front: ModelServer's HTTP/JSON API (`/v1/models/...`) under the same
authentication, policy, limits and audit as the gRPC listener (transport stage).

The TLS rules are `listen`'s: TLS with client certificates by default, TLS plus bearer
tokens with `client_auth: none`, plaintext only on loopback or a unix socket. Every bound
here holds before the caller has authenticated (docs/rest.md lists them with their reasons).
"""

from __future__ import annotations

import urllib.parse
from typing import Literal

import pydantic
from pydantic import Field

from proxy.config.base import Address, KeyProblem, MiB, Section
from proxy.config.listen import ListenTLS, check_transport


class RestJson(Section):
    """Bounds on the JSON document, checked before it is parsed into Python objects."""

    max_depth: int = Field(
        48, ge=4, le=512, description="Deepest nesting of arrays and objects. A rank-32 "
        "tensor (the deepest the REST front reads) in row format needs 36.")
    max_string_bytes: int = Field(
        4 * MiB, ge=1024, description="Longest JSON string as sent (escapes counted as "
        "sent). Tensor limits judge string elements after decoding "
        "(limits.tensors.max_string_element_bytes); this bounds every string, keys and "
        "values the server ignores included.")
    max_number_chars: int = Field(
        400, ge=32, le=4300, description="Longest number literal. A double needs at most "
        "about 25 characters; 4300 digits is Python's own integer ceiling.")


class RestParse(Section):
    """Where request bodies are parsed: JSON parsing of a large body costs tens of ms per
    MiB of CPU, which on the event loop would stall every other call of the process."""

    threads: int = Field(
        2, ge=0, le=64, description="Threads that parse bodies of at least "
        "`inline_below_bytes`. 0: every body is parsed on the event loop.")
    inline_below_bytes: int = Field(
        64 * 1024, ge=0, description="Bodies smaller than this are parsed on the event loop "
        "(handing one to a thread costs more than parsing it).")
    max_queued_bytes: int = Field(
        64 * MiB, ge=0, description="Body bytes waiting for or being parsed by the threads "
        "at once; a body that would pass it is refused with 503 (reason overloaded).")


class Rest(Section):
    """The REST listener (docs/rest.md). Omit the section to serve gRPC only."""

    address: Address = Field("127.0.0.1:8501", description="host:port or unix:PATH.")
    tls: ListenTLS | None = Field(None, description="TLS settings; required unless plaintext.")
    plaintext: bool = Field(
        False, description="Serve without TLS. Only allowed on loopback or a unix socket.")
    upstream: Literal["native", "translate"] = Field(
        "native", description="`native`: forward to each upstream's REST port "
        "(`upstreams.<name>.rest_address`), as re-serialized JSON of what was judged. "
        "`translate`: send the equivalent gRPC request to the upstream's gRPC address and "
        "answer with ModelServer's JSON.")
    max_wire_bytes: int = Field(
        16 * MiB, gt=0, description="Largest request body as received (a Content-Length "
        "above it is refused before a byte is read); 413.")
    max_body_bytes: int = Field(
        16 * MiB, gt=0, description="Largest body after gzip/deflate; 413. Parsed JSON costs "
        "Python about 4-5 times this in memory.")
    json_bounds: RestJson = Field(default_factory=RestJson,
                                  description="JSON document bounds.")
    parse: RestParse = Field(default_factory=RestParse, description="Body parsing threads.")
    max_header_bytes: int = Field(
        8190, ge=1024, le=65536, description="Longest request line and longest header line; "
        "a longer one is answered 400 / 431 before any stage runs.")
    max_headers: int = Field(64, ge=8, le=1024, description="Most header lines of a request.")
    max_connections: int = Field(
        1024, ge=1, description="Open client connections per process; more are closed at "
        "once.")
    idle_timeout_s: float = Field(
        15, gt=0, le=3600, description="A connection without a request for this long is "
        "closed; this includes the time to send a request's headers (a trickling client).")
    handshake_timeout_s: float = Field(5, gt=0, le=600, description="Time a TLS handshake "
                                       "may take.")
    receive_timeout_s: float = Field(
        10, gt=0, le=3600, description="A request's body must have arrived completely this "
        "long after its headers, else 408 (reason request-timeout).")
    max_calls: int = Field(
        4096, ge=1, le=1_000_000, description="Calls in flight per process; more are refused "
        "with 503 (reason overloaded).")
    max_calls_per_peer: int = Field(
        512, ge=1, description="Calls in flight from one peer IP address, whatever its "
        "credentials; more are refused with 503 (reason overloaded).")
    max_buffered_bytes: int = Field(
        512 * MiB, ge=0, description="Request body bytes held at once per process "
        "(received, not yet forwarded); a body that would pass it is refused with 503.")

    @pydantic.model_validator(mode="after")
    def _tls_or_loopback(self) -> Rest:
        check_transport(self.address, self.plaintext, self.tls)
        if self.max_body_bytes < self.parse.inline_below_bytes:
            raise KeyProblem(("parse", "inline_below_bytes"), "must not exceed max_body_bytes")
        return self

    def requires_certificates(self) -> bool:
        return self.tls is not None and self.tls.client_auth == "require"


def check_rest_url(value: str | None) -> str | None:
    """`http://host:port` or `https://host:port`, nothing after the authority."""
    if value is None:
        return value
    url = urllib.parse.urlsplit(value)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"expected http://host:port or https://host:port, got {value!r}")
    try:
        url.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError(f"bad port in {value!r}") from None
    if url.path not in ("", "/") or url.query or url.fragment or url.username:
        raise ValueError(f"give only scheme, host and port, got {value!r}")
    return value.rstrip("/")
