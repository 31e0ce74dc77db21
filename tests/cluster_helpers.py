"""What the cluster policy tests share: a config with client and worker roles, and a
`Caller` that runs one principal's requests through the real admission path."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from proxy import admission
from proxy.call import Call, Principal
from proxy.cluster_guard import Exchange
from proxy.config import validate_config
from proxy.errors import Reason, Reject
from proxy.state import State, build_state
from tests import distributed_requests as rq

CLIENT = "spiffe://tfgate.test/cluster/client"
OTHER = "spiffe://tfgate.test/cluster/other-client"
WORKER = "spiffe://tfgate.test/cluster/worker0"
CLIENT_METHODS = ["GetStatus", "CreateContext", "UpdateContext", "Enqueue", "StreamingEnqueue",
                  "RunComponentFunction", "KeepAlive", "CloseContext", "RecvTensor",
                  "CreateSession", "ExtendSession", "RunStep", "CloseSession", "ListDevices",
                  "MakeCallable", "RunCallable", "ReleaseCallable"]
WORKER_METHODS = ["GetStatus", "CreateWorkerSession", "DeleteWorkerSession", "RegisterGraph",
                  "DeregisterGraph", "RunGraph", "CleanupGraph", "RecvTensor"]
CONFIG: dict[str, Any] = {
    "listen": {"address": "127.0.0.1:0", "plaintext": True, "local_identity": CLIENT},
    "upstreams": {"worker0": {"address": "127.0.0.1:2222", "kind": "cluster"}},
    "cluster": {"addresses": ["127.0.0.1:2222", "127.0.0.1:2223", "worker-*.tf.test:2222"]},
    "policy": {"rules": [
        {"name": "clients", "principals": {"spiffe": ["spiffe://tfgate.test/cluster/*client"]},
         "methods": CLIENT_METHODS},
        {"name": "workers", "principals": {"spiffe": ["spiffe://tfgate.test/cluster/worker*"]},
         "methods": WORKER_METHODS, "ops": {"lift": ["CollectiveReduceV2"]}},
    ]},
    "audit": {"output": "stderr"},
}


def state_for(config: dict[str, Any] | None = None, **changes: Any) -> State:
    data = copy.deepcopy(config or CONFIG)
    data.update(changes)
    return build_state(validate_config(data), connect=False)


def principal(spiffe: str) -> Principal:
    return Principal(spiffe_id=spiffe, has_certificate=True)


class Caller:
    """One principal's calls through admission, one Exchange per call."""

    def __init__(self, state: State, spiffe: str) -> None:
        self.state, self.principal = state, principal(spiffe)

    def call(self, method: str, *messages: bytes, answers: list[bytes] | None = None,
             exchange: Exchange | None = None) -> Call:
        path = next(p for p in self.state.methods.methods if p.endswith("/" + method))
        call = Call(path, "test")
        call.principal = self.principal
        found = self.state.methods.lookup(path)
        exchange = exchange if exchange is not None else Exchange()
        for message in messages:
            admission.inspect(self.state, call, found, message, exchange)
        for answer in answers if answers is not None else [b""] * len(messages):
            admission.answered(self.state, exchange, answer)
        return call

    def refused(self, reason: Reason, method: str, *messages: bytes, **kw: Any) -> Reject:
        with pytest.raises(Reject) as info:
            self.call(method, *messages, **kw)
        assert info.value.reason is reason, info.value.message
        return info.value


def context(caller: Caller, context_id: int = 7) -> int:
    caller.call("CreateContext", rq.create_context(context_id))
    return context_id


def protos(request: pytest.FixtureRequest) -> rq.Protos:
    """For a fixture parametrized over "ours" and "tf" (marked tf)."""
    if request.param == "tf":
        pytest.importorskip("tensorflow")
    return rq.Protos(request.param)


PROTOS = ["ours", pytest.param("tf", marks=pytest.mark.tf)]
