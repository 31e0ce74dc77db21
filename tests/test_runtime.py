"""Tests for proxy.runtime: a swap never changes the config of a call in flight, an old
State is closed only once its last call has left, and what outlives a config is shared."""

from __future__ import annotations

import dataclasses
import threading

import grpc
import pytest

from proxy.config import validate_config
from proxy.runtime import Runtime
from proxy.state import State, build_state
from tests.conftest import base_config
from tests.rawbackend import PREDICT
from tests.test_e2e_forwarding import predict_bytes


class _Closes:
    """Stands in for a State's audit sink, to see when the State is closed."""

    def __init__(self) -> None:
        self.closed = 0

    def emit(self, call: object) -> None:
        pass

    def close(self) -> None:
        self.closed += 1


def _state(pki, signing, **policy_overrides) -> tuple[State, _Closes]:
    config = base_config(pki, signing, "127.0.0.1:1")
    config["policy"].update(policy_overrides)
    sink = _Closes()
    return dataclasses.replace(build_state(validate_config(config), connect=False),
                               audit=sink), sink


class TestSwap:
    def test_calls_keep_the_state_they_started_with(self, pki, signing) -> None:
        """A call that entered before a swap leaves with its own State; new calls get
        the new one; the old one is closed when its last call leaves, not before."""
        old, old_sink = _state(pki, signing)
        new, new_sink = _state(pki, signing, rules=[])
        runtime = Runtime(old)
        in_flight = runtime.enter()
        assert runtime.swap(new) is old and runtime.state is new
        assert in_flight is old and old_sink.closed == 0
        assert runtime.enter() is new
        runtime.leave(in_flight)
        assert old_sink.closed == 1 and new_sink.closed == 0

    def test_idle_state_closes_at_once(self, pki, signing) -> None:
        old, old_sink = _state(pki, signing)
        runtime = Runtime(old)
        runtime.swap(_state(pki, signing)[0])
        assert old_sink.closed == 1

    def test_shared_parts_outlive_a_swap(self, pki, signing) -> None:
        """Limit state and counters belong to the runtime, not to one config."""
        old, _ = _state(pki, signing)
        cfg = validate_config(base_config(pki, signing, "127.0.0.1:1"))
        new = build_state(cfg, old.shared, connect=False)
        runtime = Runtime(old)
        runtime.swap(new)
        assert runtime.state.shared is old.shared is runtime.shared
        assert new.limits.state is old.limits.state

    def test_close_closes_every_state(self, pki, signing) -> None:
        old, old_sink = _state(pki, signing)
        new, new_sink = _state(pki, signing)
        runtime = Runtime(old)
        runtime.enter()
        runtime.swap(new)
        runtime.close()
        assert (old_sink.closed, new_sink.closed) == (1, 1)


class TestSwapUnderTraffic:
    def test_in_flight_call_finishes_under_its_config(self, pki, signing, raw_backend) -> None:
        """A call admitted under a policy that allows it completes after a swap to a
        policy that denies everything; the next call is denied."""
        allow = validate_config(base_config(pki, signing, raw_backend.address))
        deny_config = base_config(pki, signing, raw_backend.address)
        deny_config["policy"]["rules"] = []
        from proxy.server import RunningServer

        server = RunningServer(allow).start()
        try:
            call = pki.channel(server.address, pki.alice).unary_unary(PREDICT)
            blocked = call.future(predict_bytes("half_plus_two", 1), timeout=10,
                                  metadata=[("x-block", "1")])
            assert raw_backend.entered.wait(5)
            server.runtime.swap(build_state(validate_config(deny_config), server.runtime.shared))
            raw_backend.release.set()
            assert blocked.result().startswith(b"echo:")
            with pytest.raises(grpc.RpcError) as info:
                call(predict_bytes("half_plus_two", 1), timeout=5)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        finally:
            raw_backend.release.set()
            server.stop(0)
        assert len(raw_backend.received) == 1

    def test_concurrent_enter_leave_and_swap(self, pki, signing) -> None:
        """Counting stays exact under threads: every State is closed exactly once."""
        states = [_state(pki, signing) for _ in range(20)]
        runtime = Runtime(states[0][0])

        def traffic() -> None:
            for _ in range(200):
                runtime.leave(runtime.enter())

        threads = [threading.Thread(target=traffic) for _ in range(4)]
        for t in threads:
            t.start()
        for state, _ in states[1:]:
            runtime.swap(state)
        for t in threads:
            t.join(10)
        assert [sink.closed for _, sink in states[:-1]] == [1] * 19
        assert states[-1][1].closed == 0
