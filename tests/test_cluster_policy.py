"""Policy over distributed-TF requests, with the real admission path (no sockets):
ops (allow/deny/lift, the default denylist, ops hidden in functions), cluster addresses,
debug URLs, settings, and handles and functions bound to the principal that created
them. Requests are built from TensorFlow's own protos (tf marker) and from ours."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from proxy import admission
from proxy.call import Call, Principal
from proxy.cluster_guard import Exchange
from proxy.config import validate_config
from proxy.errors import Code, ConfigError, Reason, Reject
from proxy.pb import distributed_master_pb2, distributed_worker_pb2
from proxy.state import State, build_state
from tests import distributed_requests as rq

CLIENT = "spiffe://tfgate.test/cluster/client"
OTHER = "spiffe://tfgate.test/cluster/other-client"
WORKER = "spiffe://tfgate.test/cluster/worker0"
EAGER = "/tensorflow.eager.EagerService/"
MASTER = "/tensorflow.MasterService/"
WORKER_SVC = "/tensorflow.WorkerService/"
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


@pytest.fixture(params=["ours", pytest.param("tf", marks=pytest.mark.tf)])
def P(request: pytest.FixtureRequest) -> rq.Protos:
    if request.param == "tf":
        pytest.importorskip("tensorflow")
    return rq.Protos(request.param)


def state_for(config: dict[str, Any] | None = None, **changes: Any) -> State:
    data = copy.deepcopy(config or CONFIG)
    data.update(changes)
    return build_state(validate_config(data), connect=False)


@pytest.fixture
def state() -> State:
    return state_for()


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


class TestOps:
    def test_an_ordinary_op_runs_and_is_audited(self, state: State, P: rq.Protos) -> None:
        client = Caller(state, CLIENT)
        ctx = context(client)
        call = client.call("Enqueue", rq.enqueue(ctx, rq.op_item("Mul"), rq.op_item("AddV2")))
        assert call.rule == "clients" and call.ops == ["Mul", "AddV2"] and call.ops_judged == 2

    def test_read_file_is_refused_naming_the_op_and_where(self, state: State) -> None:
        client = Caller(state, CLIENT)
        ctx = context(client)
        refused = client.refused(Reason.OP_NOT_ALLOWED, "Enqueue",
                                 rq.enqueue(ctx, rq.op_item("Const"), rq.op_item("ReadFile")))
        assert refused.code is Code.PERMISSION_DENIED
        assert 'op "ReadFile" at queue[1].operation "ReadFile"' in refused.message
        assert "file-io" in refused.message

    def test_ops_hidden_in_nested_functions(self, state: State, P: rq.Protos) -> None:
        """WriteFile two calls deep in a registered function; PyFunc behind a func attr
        of a TF1 graph: both found, both refused."""
        client = Caller(state, CLIENT)
        ctx = context(client)
        inner = P.function("inner", P.node("w", "WriteFile"))
        outer = P.function("outer", P.node("call", "PartitionedCall", f=P.func("inner")))
        refused = client.refused(Reason.OP_NOT_ALLOWED, "Enqueue", rq.enqueue(
            ctx, rq.register_item(outer, P.FunctionDefLibrary(function=[inner]))))
        assert '"WriteFile"' in refused.message and '"inner"' in refused.message
        body = P.function("body", P.node("py", "PyFunc"))
        graph = P.graph([P.node("call", "StatefulPartitionedCall", f=P.func("body"))], [body])
        refused = client.refused(Reason.OP_NOT_ALLOWED, "CreateSession", rq.create_session(graph))
        assert '"PyFunc"' in refused.message

    def test_allowlist(self, P: rq.Protos) -> None:
        config = copy.deepcopy(CONFIG)
        config["policy"]["rules"][0]["ops"] = {"allow": ["Const", "Mul", "Stateless*"]}
        client = Caller(state_for(config), CLIENT)
        ctx = context(client)
        client.call("Enqueue", rq.enqueue(ctx, rq.op_item("Mul"), rq.op_item("StatelessWhile")))
        refused = client.refused(Reason.OP_NOT_ALLOWED, "Enqueue",
                                 rq.enqueue(ctx, rq.op_item("AddV2")))
        assert '"AddV2"' in refused.message and "default denylist" not in refused.message

    def test_deny_adds_to_the_default_denylist(self) -> None:
        config = copy.deepcopy(CONFIG)
        config["policy"]["rules"][0]["ops"] = {"deny": ["Matrix*"]}
        client = Caller(state_for(config), CLIENT)
        ctx = context(client)
        client.refused(Reason.OP_NOT_ALLOWED, "Enqueue", rq.enqueue(ctx, rq.op_item("MatrixInverse")))
        client.refused(Reason.OP_NOT_ALLOWED, "Enqueue", rq.enqueue(ctx, rq.op_item("ReadFile")))

    def test_lift_is_per_rule(self, state: State, P: rq.Protos) -> None:
        """Workers may all-reduce (their rule lifts it); the client may not."""
        graph = P.graph([P.node("r", "CollectiveReduceV2")])
        worker = Caller(state, WORKER)
        worker.call("CreateWorkerSession", rq.create_worker_session("s1", P.ServerDef()))
        worker.call("RegisterGraph", rq.register_graph("s1", graph), answers=[
            distributed_worker_pb2.RegisterGraphResponse(graph_handle="g1").SerializeToString()])
        Caller(state, CLIENT).refused(Reason.OP_NOT_ALLOWED, "CreateSession",
                                      rq.create_session(graph))

    @pytest.mark.parametrize(("ops", "problem"), [
        ({"lift": ["MatMul"]}, "not in the default denylist"),
        ({"allow": ["ReadFile"]}, "add it to lift"),
        ({"allow": ["Mul"], "deny": ["Add"]}, "allow or deny, not both"),
    ])
    def test_bad_op_filters_are_config_errors(self, ops: dict[str, Any], problem: str) -> None:
        config = copy.deepcopy(CONFIG)
        config["policy"]["rules"][0]["ops"] = ops
        with pytest.raises(ConfigError, match=problem):
            validate_config(config)

    def test_ops_on_a_serving_rule_is_a_config_error(self) -> None:
        config = copy.deepcopy(CONFIG)
        config["upstreams"]["serving"] = {"address": "127.0.0.1:8500"}
        config["policy"]["rules"].append({"principals": {"spiffe": [CLIENT]},
                                          "methods": ["Predict"], "models": ["*"],
                                          "ops": {"allow": ["Mul"]}})
        with pytest.raises(ConfigError, match=r"rules\[2\]\.ops"):
            state_for(config)


class TestAddressesUrlsSettings:
    def test_cluster_addresses_must_be_allowlisted(self, state: State, P: rq.Protos) -> None:
        client = Caller(state, CLIENT)
        good = P.ServerDef(cluster=P.cluster({"worker": ["127.0.0.1:2222", "worker-1.tf.test:2222"]}))
        client.call("CreateContext", rq.create_context(1, good))
        bad = P.ServerDef(cluster=P.cluster({"worker": ["127.0.0.1:2222", "10.9.9.9:2222"]}))
        refused = client.refused(Reason.ADDRESS_NOT_ALLOWED, "CreateContext",
                                 rq.create_context(2, bad))
        assert '"10.9.9.9:2222"' in refused.message and "task 1" in refused.message
        deep = P.cluster({"worker": ["a.b.tf.test:2222"]})  # `*` is one label
        refused = client.refused(Reason.ADDRESS_NOT_ALLOWED, "CreateSession", rq.create_session(
            P.graph([P.node("c", "Const")]), P.ConfigProto(cluster_def=deep)))
        assert "a.b.tf.test" in refused.message

    def test_no_allowlist_refuses_every_address(self, P: rq.Protos) -> None:
        client = Caller(state_for(cluster={}), CLIENT)
        server_def = P.ServerDef(cluster=P.cluster({"worker": ["127.0.0.1:2222"]}))
        client.refused(Reason.ADDRESS_NOT_ALLOWED, "CreateContext", rq.create_context(1, server_def))

    def test_worker_sessions_name_addresses_too(self, state: State, P: rq.Protos) -> None:
        bad = P.ServerDef(cluster=P.cluster({"worker": ["evil.example:1"]}))
        Caller(state, WORKER).refused(Reason.ADDRESS_NOT_ALLOWED, "CreateWorkerSession",
                                      rq.create_worker_session("s", bad))

    def test_debug_urls_are_refused(self, state: State, P: rq.Protos) -> None:
        worker = Caller(state, WORKER)
        worker.call("CreateWorkerSession", rq.create_worker_session("s", P.ServerDef()))
        watch = P.debug_watch(["DebugIdentity"], ["file:///tmp/dump"])
        refused = worker.refused(Reason.DEBUG_URL_REFUSED, "RegisterGraph", rq.register_graph(
            "s", P.graph([P.node("c", "Const")]), debug_options=watch))
        assert "file:///tmp/dump" in refused.message

    def test_settings_need_a_rule_that_names_them(self) -> None:
        Caller(state_for(), CLIENT).refused(Reason.SETTING_NOT_ALLOWED, "CreateContext",
                                            rq.create_context(1, clear=True))
        config = copy.deepcopy(CONFIG)
        config["policy"]["rules"][0]["settings"] = ["clear_existing_contexts"]
        Caller(state_for(config), CLIENT).call("CreateContext", rq.create_context(1, clear=True))


class TestHandles:
    def test_a_context_is_its_creators(self, state: State) -> None:
        client, other = Caller(state, CLIENT), Caller(state, OTHER)
        ctx = context(client, 12345)
        client.call("Enqueue", rq.enqueue(ctx, rq.op_item("Mul")))
        refused = other.refused(Reason.HANDLE_NOT_OWNED, "Enqueue", rq.enqueue(ctx, rq.op_item("Mul")))
        assert "12345" not in refused.message  # a bearer secret is never echoed or logged
        other.refused(Reason.HANDLE_NOT_OWNED, "CreateContext", rq.create_context(ctx))
        other.refused(Reason.HANDLE_NOT_OWNED, "CloseContext", rq.f64(1, ctx))
        other.refused(Reason.HANDLE_NOT_OWNED, "Enqueue", rq.enqueue(99, rq.op_item("Mul")))
        client.call("CloseContext", rq.f64(1, ctx))
        client.refused(Reason.HANDLE_NOT_OWNED, "Enqueue", rq.enqueue(ctx, rq.op_item("Mul")))

    def test_functions_are_the_registering_callers(self, state: State, P: rq.Protos) -> None:
        """A registered function is called by name (an op position): it passes for its
        registrant even under an allowlist that does not name it, and a reference to a
        function nobody registered here is refused."""
        config = copy.deepcopy(CONFIG)
        config["policy"]["rules"][0]["ops"] = {"allow": ["Mul", "Const"]}
        state = state_for(config)
        client = Caller(state, CLIENT)
        ctx = context(client)
        square = P.function("__inference_square_1", P.node("m", "Mul"))
        client.call("Enqueue", rq.enqueue(ctx, rq.register_item(square)))
        call = client.call("Enqueue", rq.enqueue(ctx, rq.op_item(
            "__inference_square_1", is_function=True)))
        assert call.ops == ["__inference_square_1"]
        refused = client.refused(Reason.FUNCTION_NOT_REGISTERED, "RunComponentFunction",
                                 rq.run_component_function(ctx, "__inference_never"))
        assert "__inference_never" in refused.message
        other_ctx = context(Caller(state, OTHER), 8)
        Caller(state, OTHER).refused(Reason.FUNCTION_NOT_REGISTERED, "RunComponentFunction",
                                     rq.run_component_function(other_ctx, "__inference_square_1"))

    def test_pending_definitions_are_visible_in_their_stream(self, state: State,
                                                             P: rq.Protos) -> None:
        """TF's client registers a function and calls it before the first answer came:
        the same stream sees the definition at once, other calls once it is answered."""
        client = Caller(state, CLIENT)
        ctx = context(client)
        f = P.function("__inference_f_2", P.node("m", "Mul"))
        stream = Exchange()
        client.call("StreamingEnqueue", rq.enqueue(ctx, rq.register_item(f)),
                    rq.enqueue(ctx, rq.op_item("__inference_f_2", is_function=True)),
                    answers=[], exchange=stream)
        client.refused(Reason.FUNCTION_NOT_REGISTERED, "RunComponentFunction",
                       rq.run_component_function(ctx, "__inference_f_2"))
        admission.answered(state, stream, b"")
        client.call("RunComponentFunction", rq.run_component_function(ctx, "__inference_f_2"))

    def test_unanswered_definitions_are_never_committed(self, state: State, P: rq.Protos) -> None:
        client = Caller(state, CLIENT)
        ctx = context(client)
        f = P.function("__inference_g_3", P.node("m", "Mul"))
        client.call("Enqueue", rq.enqueue(ctx, rq.register_item(f)), answers=[])  # it failed
        client.refused(Reason.FUNCTION_NOT_REGISTERED, "RunComponentFunction",
                       rq.run_component_function(ctx, "__inference_g_3"))

    def test_a_removed_function_is_gone(self, state: State, P: rq.Protos) -> None:
        """RemoveFunction forgets the name once the server answered; removing a name the
        context never held harms no one else (the context is the caller's) and passes."""
        client = Caller(state, CLIENT)
        ctx = context(client)
        f = P.function("__inference_h_4", P.node("m", "Mul"))
        client.call("Enqueue", rq.enqueue(ctx, rq.register_item(f)))
        client.call("RunComponentFunction", rq.run_component_function(ctx, "__inference_h_4"))
        client.call("Enqueue", rq.enqueue(ctx, rq.remove_item("__inference_h_4"),
                                          rq.remove_item("__inference_never_5")))
        client.refused(Reason.FUNCTION_NOT_REGISTERED, "RunComponentFunction",
                       rq.run_component_function(ctx, "__inference_h_4"))
        Caller(state, OTHER).refused(Reason.HANDLE_NOT_OWNED, "Enqueue", rq.enqueue(
            ctx, rq.remove_item("__inference_h_4")))

    def test_a_function_named_like_an_op_is_refused(self, state: State, P: rq.Protos) -> None:
        client = Caller(state, CLIENT)
        ctx = context(client)
        fake = P.function("Identity", P.node("m", "Mul"))
        refused = client.refused(Reason.MALFORMED_REQUEST, "Enqueue",
                                 rq.enqueue(ctx, rq.register_item(fake)))
        assert "named like a TF op" in refused.message

    def test_sessions_graphs_and_callables(self, state: State, P: rq.Protos) -> None:
        """A session comes back in CreateSession's answer; it and everything numbered in
        it belong to the client; a close releases them."""
        client, other = Caller(state, CLIENT), Caller(state, OTHER)
        created = distributed_master_pb2.CreateSessionResponse(session_handle="abc").SerializeToString()
        client.call("CreateSession", rq.create_session(P.graph([P.node("c", "Const")])),
                    answers=[created])
        client.call("RunStep", rq.run_step("abc"))
        other.refused(Reason.HANDLE_NOT_OWNED, "RunStep", rq.run_step("abc"))
        handle = distributed_master_pb2.MakeCallableResponse(handle=3).SerializeToString()
        client.call("MakeCallable", rq.make_callable("abc", P.CallableOptions()), answers=[handle])
        run_callable = rq.ld(1, b"abc") + rq.vi(2, 3)
        client.call("RunCallable", run_callable)
        client.refused(Reason.HANDLE_NOT_OWNED, "RunCallable", rq.ld(1, b"abc") + rq.vi(2, 4))
        client.call("CloseSession", rq.ld(1, b"abc"))
        client.refused(Reason.HANDLE_NOT_OWNED, "RunStep", rq.run_step("abc"))
        client.refused(Reason.HANDLE_NOT_OWNED, "RunCallable", run_callable)

    def test_graph_handles_are_scoped_by_session(self, state: State, P: rq.Protos) -> None:
        """Graph handles are counters ("0000000000000001" in every session): a graph of
        one session is not a graph of another's."""
        worker, intruder = Caller(state, WORKER), Caller(state, "spiffe://tfgate.test/cluster/worker9")
        graph = P.graph([P.node("c", "Const")])
        answer = distributed_worker_pb2.RegisterGraphResponse(graph_handle="0001").SerializeToString()
        for who, session in ((worker, "s1"), (intruder, "s2")):
            who.call("CreateWorkerSession", rq.create_worker_session(session, P.ServerDef()))
            who.call("RegisterGraph", rq.register_graph(session, graph), answers=[answer])
        run = distributed_worker_pb2.RunGraphRequest(
            session_handle="s1", graph_handle="0001", step_id=77).SerializeToString()
        worker.call("RunGraph", run)
        intruder.refused(Reason.HANDLE_NOT_OWNED, "RunGraph", run)
        intruder.refused(Reason.HANDLE_NOT_OWNED, "RecvTensor", rq.vi(1, 77))  # worker's step
        intruder.call("RecvTensor", rq.vi(1, 78))  # a step tfgate never saw begin passes
        worker.call("CleanupGraph", rq.vi(1, 77))
        intruder.call("RecvTensor", rq.vi(1, 77))

    def test_the_shared_legacy_session_is_refused(self, state: State, P: rq.Protos) -> None:
        refused = Caller(state, WORKER).refused(Reason.HANDLE_NOT_OWNED, "RegisterGraph",
                                                rq.register_graph("", P.graph([])))
        assert "legacy session" in refused.message
        Caller(state, CLIENT).call("ListDevices", b"")  # "" lists the cluster's devices

    def test_ownership_outlives_a_reload(self, state: State) -> None:
        ctx = context(Caller(state, CLIENT))
        reloaded = build_state(state.config, state.shared, connect=False)
        Caller(reloaded, CLIENT).call("Enqueue", rq.enqueue(ctx, rq.op_item("Mul")))
        Caller(reloaded, OTHER).refused(Reason.HANDLE_NOT_OWNED, "Enqueue",
                                        rq.enqueue(ctx, rq.op_item("Mul")))


class TestMemoryBounds:
    def caps(self, per_principal: int, total: int, idle_s: float = 3600) -> State:
        return state_for(cluster={**CONFIG["cluster"], "handles": {
            "max_bytes_per_principal": per_principal, "max_bytes": total, "idle_s": idle_s}})

    def test_a_principal_past_its_budget_forgets_its_oldest(self) -> None:
        state = self.caps(per_principal=2000, total=100_000)
        client = Caller(state, CLIENT)
        for ctx in range(1, 20):
            context(client, ctx)
        entries, used = state.shared.handles.snapshot()
        assert used <= 2000 and 0 < entries < 19
        client.call("Enqueue", rq.enqueue(19, rq.op_item("Mul")))  # the newest is kept
        client.refused(Reason.HANDLE_NOT_OWNED, "Enqueue", rq.enqueue(1, rq.op_item("Mul")))

    def test_a_full_table_refuses_new_handles_not_others(self) -> None:
        state = self.caps(per_principal=3000, total=3000)
        context(Caller(state, CLIENT), 1)
        other = Caller(state, OTHER)
        for ctx in range(100, 130):
            try:
                context(other, ctx)
            except Reject as refused:
                assert refused.reason is Reason.LIMIT_EXCEEDED
                break
        else:
            pytest.fail("the table never filled")
        Caller(state, CLIENT).call("Enqueue", rq.enqueue(1, rq.op_item("Mul")))


def const(P: rq.Protos, name: str, shape: tuple[int, ...], values: tuple[float, ...]) -> Any:
    """A Const node whose value declares `shape` and carries `values` (TF repeats a
    single value to fill the shape)."""
    value = P.AttrValue()
    value.tensor.dtype = 1  # DT_FLOAT
    for size in shape:
        value.tensor.tensor_shape.dim.add(size=size)
    value.tensor.float_val.extend(values)
    return P.node(name, "Const", value=value)


class TestTensors:
    """Tensors a cluster request carries are sized as the server will allocate them."""

    BIG = 10**9  # elements: 4 GB of float32 from a few bytes on the wire

    def test_an_expanding_constant_is_refused(self, state: State, P: rq.Protos) -> None:
        graph = P.graph([const(P, "ok", (0,), ()), const(P, "small", (4,), (1.0,)),
                         const(P, "big", (self.BIG,), (1.0,))])
        refused = Caller(state, CLIENT).refused(Reason.LIMIT_EXCEEDED, "CreateSession",
                                                rq.create_session(graph))
        assert refused.code is Code.RESOURCE_EXHAUSTED
        assert 'tensor at graph_def.node[2] "big".attr["value"]' in refused.message
        assert "4000000000 bytes decoded" in refused.message
        assert "cluster.tensors.max_tensor_bytes" in refused.message

    def test_in_a_registered_function_body(self, state: State, P: rq.Protos) -> None:
        client = Caller(state, CLIENT)
        ctx = context(client)
        body = P.function("__inference_fill_6", const(P, "big", (self.BIG,), (0.0,)))
        refused = client.refused(Reason.LIMIT_EXCEEDED, "Enqueue",
                                 rq.enqueue(ctx, rq.register_item(body)))
        assert "__inference_fill_6" in refused.message

    def test_feeds_and_eager_inputs(self, state: State) -> None:
        from proxy.pb import distributed_eager_pb2

        client = Caller(state, CLIENT)
        created = distributed_master_pb2.CreateSessionResponse(session_handle="s").SerializeToString()
        client.call("CreateSession", rq.create_session(rq.Protos("ours").graph()), answers=[created])
        step = distributed_master_pb2.RunStepRequest(session_handle="s")
        feed = step.feed.add(name="x:0")
        feed.tensor.dtype, feed.tensor.tensor_shape.dim.add().size = 1, self.BIG
        feed.tensor.float_val.append(1.0)
        refused = client.refused(Reason.LIMIT_EXCEEDED, "RunStep", step.SerializeToString())
        assert 'feed[0] "x:0"' in refused.message
        ctx = context(client)
        enqueue = distributed_eager_pb2.EnqueueRequest(context_id=ctx)
        op = enqueue.queue.add().operation
        op.id, op.name = 1, "Mul"
        given = op.op_inputs.add().tensor
        given.dtype, given.tensor_shape.dim.add().size = 1, self.BIG
        given.float_val.append(2.0)
        refused = client.refused(Reason.LIMIT_EXCEEDED, "Enqueue", enqueue.SerializeToString())
        assert "queue[0].operation.op_inputs[0]" in refused.message

    def test_the_caps_are_configurable(self, P: rq.Protos) -> None:
        state = state_for(cluster={**CONFIG["cluster"], "tensors": {
            "max_tensor_bytes": 8 * 10**9, "max_request_bytes": 8 * 10**9}})
        graph = P.graph([const(P, "big", (self.BIG,), (1.0,))])
        Caller(state, CLIENT).call("CreateSession", rq.create_session(graph))
        state = state_for(cluster={**CONFIG["cluster"], "tensors": {"max_request_bytes": 20}})
        graph = P.graph([const(P, "a", (4,), (1.0,)), const(P, "b", (4,), (1.0,))])
        refused = Caller(state, CLIENT).refused(Reason.LIMIT_EXCEEDED, "CreateSession",
                                                rq.create_session(graph))
        assert "32 tensor bytes decoded > max 20" in refused.message

    def test_a_value_count_tf_would_not_read_as_sent(self, state: State, P: rq.Protos) -> None:
        graph = P.graph([const(P, "odd", (4,), (1.0, 2.0, 3.0))])
        Caller(state, CLIENT).refused(Reason.MALFORMED_REQUEST, "CreateSession",
                                      rq.create_session(graph))
