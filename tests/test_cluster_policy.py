"""Policy over distributed-TF requests, with the real admission path (no sockets):
ops (allow/deny/lift, the default denylist, ops hidden in functions), cluster addresses,
debug URLs, settings, tensor sizes. Handles and functions: test_cluster_handles.py.
Requests are built from TensorFlow's own protos (tf marker) and from ours."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from proxy.config import validate_config
from proxy.errors import Code, ConfigError, Reason
from proxy.pb import distributed_master_pb2, distributed_worker_pb2
from proxy.state import State
from tests import distributed_requests as rq
from tests.cluster_helpers import (
    CLIENT,
    CONFIG,
    PROTOS,
    WORKER,
    Caller,
    context,
    protos,
    state_for,
)


@pytest.fixture(params=PROTOS)
def P(request: pytest.FixtureRequest) -> rq.Protos:
    return protos(request)


@pytest.fixture
def state() -> State:
    return state_for()


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

    @pytest.mark.parametrize("address", [
        # TF dials "dns:///" + address: gRPC's URI parser drops from '#' or '?' on and
        # decodes %XX, so these dial 127.0.0.1:9 and worker-x.evil.example:80 (TF 2.21).
        "127%2E0%2E0%2E1%3A9#.tf.test:2222", "worker-x%2Eevil%2Eexample%3A80#.tf.test:2222",
        "worker-a?.tf.test:2222", "worker-1.tf.test:02222", "worker-1.tf.test: 2222",
        "worker-1.tf.test:2222:2222", "[fe80::1%eth0]:2222", "0177.0.0.1:2222",
        "127.1:2222", "2130706433:2222", "/bns/worker/1",
    ])
    def test_only_a_plain_host_port_can_match(self, P: rq.Protos, address: str) -> None:
        """`worker-*.tf.test:2222` is one DNS label: URI syntax in it would dial elsewhere,
        and so would other spellings of an IPv4 address."""
        config = copy.deepcopy(CONFIG)
        config["cluster"]["addresses"].append("**:2222")
        client = Caller(state_for(config), CLIENT)
        server_def = P.ServerDef(cluster=P.cluster({"worker": [address]}))
        refused = client.refused(Reason.ADDRESS_NOT_ALLOWED, "CreateContext",
                                 rq.create_context(1, server_def))
        assert "is not a plain host:port" in refused.message

    def test_thread_counts_are_bounded(self, state: State, P: rq.Protos) -> None:
        """A worker starts an eager context's inter-op pool with as many threads as
        default_session_config asks for, all at once."""
        client = Caller(state, CLIENT)
        ok = P.ServerDef(default_session_config=P.ConfigProto(inter_op_parallelism_threads=64))
        client.call("CreateContext", rq.create_context(1, ok))
        huge = P.ServerDef(default_session_config=P.ConfigProto(
            inter_op_parallelism_threads=2**31 - 1))
        refused = client.refused(Reason.LIMIT_EXCEEDED, "CreateContext", rq.create_context(2, huge))
        assert "inter_op_parallelism_threads" in refused.message
        client.refused(Reason.LIMIT_EXCEEDED, "CreateSession", rq.create_session(
            P.graph([P.node("c", "Const")]), P.ConfigProto(intra_op_parallelism_threads=10**6)))

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
