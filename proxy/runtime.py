"""The runtime: what outlives one config, and the swap from one config to the next.

It holds the current `State` and the `Shared` parts every State uses (limit state,
counters). A call `enter`s to take the State current at its start and `leave`s when it
ends; `swap` installs a new State without touching calls in flight (they keep theirs),
and an old State's channels and audit sink are closed only once its last call has left.
Server TLS credentials are built here, in one place, from the listener's config.
"""

from __future__ import annotations

import threading

import grpc

from proxy import config
from proxy.state import State, build_state
from proxy.tls import server_credentials


class Runtime:
    def __init__(self, state: State) -> None:
        self.shared = state.shared
        self._state = state
        self._lock = threading.Lock()
        self._calls: dict[State, int] = {state: 0}  # calls in flight per State
        self._retired: set[State] = set()

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

    def swap(self, new: State) -> State:
        """Make `new` current; return the State it replaced (closed once idle)."""
        with self._lock:
            old, self._state = self._state, new
            self._calls.setdefault(new, 0)
            self._retired.add(old)
            done = self._retire_if_idle(old)
        if done is not None:
            done.close()
        return old

    def _retire_if_idle(self, state: State) -> State | None:
        if state in self._retired and self._calls[state] == 0:
            del self._calls[state]
            self._retired.discard(state)
            return state
        return None

    def server_credentials(self) -> grpc.ServerCredentials | None:
        tls = self._state.config.listen.tls
        return None if tls is None else server_credentials(tls)

    def close(self) -> None:
        """Close every State, in flight or not (the server has stopped)."""
        with self._lock:
            states = [self._state, *self._retired]
            self._retired.clear()
        for state in states:
            state.close()
