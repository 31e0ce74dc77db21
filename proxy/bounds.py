"""The listener's own bounds: what any client meets before (and besides) authentication.

gRPC core enforces most of them from channel arguments (`grpc_options`): connections
per process, streams per connection, header size, handshake time, ping abuse, idle and
aged connections, and the flow-control window of a stream tfgate has not started to
read (64 KiB with BDP probing off; a pending read opens it to the declared message size).
`Bounds` holds the ones gRPC has no option for, counted per process on the event loop:
calls in flight in total and per peer address, and request bytes held (received, not yet
forwarded). docs/hostile-networks.md lists every bound with its default and reason.
"""

from __future__ import annotations

from typing import Any, Protocol

from proxy import config
from proxy.errors import Reason, Reject


class ListenerLimits(Protocol):
    """The keys `Bounds` reads: `listen` has them, and so has `rest`."""

    @property
    def receive_timeout_s(self) -> float: ...
    @property
    def max_calls(self) -> int: ...
    @property
    def max_calls_per_peer(self) -> int: ...
    @property
    def max_buffered_bytes(self) -> int: ...


def grpc_options(listen: config.Listen, *, reuse_port: bool) -> list[tuple[str, Any]]:
    ka = listen.keepalive
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", listen.max_message_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.max_concurrent_streams", listen.max_streams_per_connection),
        ("grpc.max_allowed_incoming_connections", listen.max_connections),
        ("grpc.max_metadata_size", listen.max_header_bytes),
        ("grpc.absolute_max_metadata_size", listen.max_header_bytes),
        ("grpc.server_handshake_timeout_ms", int(listen.handshake_timeout_s * 1000)),
        # Without BDP probing a stream tfgate is not reading gets the lookahead window
        # only; with it, up to 4 MiB per stream could arrive before authentication.
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", 64 * 1024),
        ("grpc.http2.min_ping_interval_without_data_ms",
         int(ka.min_client_ping_interval_s * 1000)),
        ("grpc.http2.max_ping_strikes", ka.max_ping_strikes),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.keepalive_time_ms", int(ka.time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(ka.timeout_s * 1000)),
        # Shared only by tfgate's own workers (proxy/workers.py); otherwise a stale
        # process on the same port would silently take half the calls.
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]
    if ka.max_idle_s is not None:
        options.append(("grpc.max_connection_idle_ms", int(ka.max_idle_s * 1000)))
    if ka.max_age_s is not None:
        options += [("grpc.max_connection_age_ms", int(ka.max_age_s * 1000)),
                    ("grpc.max_connection_age_grace_ms", int(ka.max_age_grace_s * 1000))]
    return options


def peer_host(peer: str) -> str:
    """`ipv4:10.0.0.1:5000` -> `ipv4:10.0.0.1`, `ipv6:[::1]:5000` -> `ipv6:[::1]`; a unix
    socket peer is one peer."""
    if peer.startswith("unix"):
        return "unix"
    host, sep, _port = peer.rpartition(":")
    return host if sep else peer


class Bounds:
    """Per-process counts the front keeps for the listener's bounds. Single-threaded: the
    event loop is the only caller."""

    def __init__(self, listen: ListenerLimits, section: str = "listen") -> None:
        self.section = section  # named in refusals: listen.max_calls, rest.max_calls
        self.configure(listen)
        self.calls = 0
        self.per_peer: dict[str, int] = {}
        self.buffered = 0

    def configure(self, listen: ListenerLimits) -> None:
        """Take these bounds from `listen` (at start, and on a reload: unlike the gRPC
        options above, they are tfgate's own counts and can change while serving)."""
        self.receive_timeout_s = listen.receive_timeout_s
        self._max_calls = listen.max_calls
        self._max_per_peer = listen.max_calls_per_peer
        self._max_buffered = listen.max_buffered_bytes

    def enter(self, peer: str) -> str:
        """Count a starting call against the process and its peer; its peer key."""
        host = peer_host(peer)
        held = self.per_peer.get(host, 0)
        if self.calls >= self._max_calls:
            raise Reject(Reason.OVERLOADED, f"{self._max_calls} calls in flight "
                         f"({self.section}.max_calls)")
        if held >= self._max_per_peer:
            raise Reject(Reason.OVERLOADED, f"{self._max_per_peer} calls in flight from "
                         f"this address ({self.section}.max_calls_per_peer)")
        self.per_peer[host] = held + 1
        self.calls += 1
        return host

    def leave(self, host: str) -> None:
        held = self.per_peer.get(host, 0) - 1
        if held > 0:
            self.per_peer[host] = held
        else:
            self.per_peer.pop(host, None)
        self.calls -= 1

    def hold_bytes(self, size: int) -> int:
        """Count `size` received bytes until `release_bytes`; refuse past the budget."""
        if self.buffered + size > self._max_buffered:
            raise Reject(Reason.OVERLOADED, f"request bytes held would exceed "
                         f"{self._max_buffered} ({self.section}.max_buffered_bytes)")
        self.buffered += size
        return size

    def release_bytes(self, size: int) -> None:
        self.buffered -= size
