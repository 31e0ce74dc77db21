"""The runtime: what outlives one config, and the swap from one config to the next.

It holds the current `State` and the `Shared` parts every State uses (limit state,
counters). A call `enter`s to take the State current at its start and `leave`s when it
ends; `swap` installs a new State without touching calls in flight (they keep theirs),
and an old State's channels and audit sink are closed only once its last call has left.

Server TLS credentials are built here, in one place: gRPC's dynamic server credentials,
whose fetcher gRPC calls at every new TLS handshake. `swap` with new `ServerTLS` material
(read and checked off to the side by the reload) makes the next handshake use it; the
fetcher itself only hands over what is ready, so no handshake ever waits on a file.
Connections already open keep the certificate they were made with.
"""

from __future__ import annotations

import threading

import grpc

from proxy import config
from proxy.state import State, build_state
from proxy.tls import ServerTLS, load_server_tls


class Runtime:
    def __init__(self, state: State) -> None:
        self.shared = state.shared
        self._state = state
        self._lock = threading.Lock()
        self._calls: dict[State, int] = {state: 0}  # calls in flight per State
        self._retired: set[State] = set()
        self._tls: ServerTLS | None = None  # what new handshakes use (None: plaintext)
        self._tls_pending: grpc.ServerCertificateConfiguration | None = None
        self._tls_lock = threading.Lock()
        self.client_auth: str | None = None  # the listener's mode, fixed at start

    @classmethod
    def from_config(cls, cfg: config.Config) -> Runtime:
        return cls(build_state(cfg))

    @property
    def state(self) -> State:
        return self._state

    def enter(self) -> State:
        """The State a starting call uses until it `leave`s."""
        with self._lock:
            state = self._state
            self._calls[state] += 1
            return state

    def leave(self, state: State) -> None:
        with self._lock:
            self._calls[state] -= 1
            done = self._retire_if_idle(state)
        if done is not None:
            done.close()

    def swap(self, new: State, tls: ServerTLS | None = None) -> State:
        """Make `new` current, and `tls` (if given and different) the material of the
        next handshakes; return the State it replaced (closed once idle)."""
        with self._lock:
            old, self._state = self._state, new
            self._calls.setdefault(new, 0)
            self._retired.add(old)
            done = self._retire_if_idle(old)
        if tls is not None and self._tls is not None and tls != self._tls:
            with self._tls_lock:
                self._tls, self._tls_pending = tls, tls.configuration()
        if done is not None:
            done.close()
        return old

    def in_flight(self) -> int:
        """Calls in flight now, under every State."""
        with self._lock:
            return sum(self._calls.values())

    def _retire_if_idle(self, state: State) -> State | None:
        if state in self._retired and self._calls[state] == 0:
            del self._calls[state]
            self._retired.discard(state)
            return state
        return None

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """The listener's credentials (None: plaintext), from the current config's files;
        ConfigError naming the key for a bad file."""
        tls = self._state.config.listen.tls
        if tls is None:
            return None
        self._tls, self.client_auth = load_server_tls(tls), tls.client_auth
        return grpc.dynamic_ssl_server_credentials(
            self._tls.configuration(), self._next_configuration,
            require_client_authentication=tls.client_auth == "require")

    @property
    def server_tls(self) -> ServerTLS | None:
        """The listener material new handshakes use (None: plaintext, or not started)."""
        return self._tls

    def load_tls(self, cfg: config.Config) -> ServerTLS | None:
        """`cfg`'s listener material for the running listener (its client-certificate
        mode is fixed at start); ConfigError naming the key. None: nothing to rotate."""
        if self._tls is None or cfg.listen.tls is None:
            return None
        return load_server_tls(cfg.listen.tls, self.client_auth)

    def _next_configuration(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's fetcher, called on a core thread at each new handshake: the new
        material once after a swap, else None (keep the current one)."""
        with self._tls_lock:
            pending, self._tls_pending = self._tls_pending, None
        return pending

    def close(self) -> None:
        """Close every State, in flight or not (the server has stopped)."""
        with self._lock:
            states = [self._state, *self._retired]
            self._retired.clear()
        for state in states:
            state.close()
