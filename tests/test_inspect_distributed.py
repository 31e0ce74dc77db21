"""Tests for proxy/inspect/distributed: which ops, functions, addresses, handles and URLs
a distributed-TF request carries. Each test runs twice: with requests built from
TensorFlow's own generated protos (tf marker: the inner bytes are what a TF peer sends)
and from ours (no TensorFlow needed)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from proxy.errors import Code, Reason, Reject
from proxy.inspect import distributed
from proxy.inspect.distributed import METHODS, OpUse, facts, graphs, parsing
from tests import distributed_requests as rq

PATH = {path.rsplit("/", 1)[1]: path for path in METHODS}


def inspect(method: str, data: bytes) -> distributed.ClusterFacts:
    return METHODS[PATH[method]][1](data)


def ops(result: distributed.ClusterFacts) -> dict[str, str]:
    return {use.op: use.where for use in result.ops}


@pytest.fixture(params=["ours", pytest.param("tf", marks=pytest.mark.tf)])
def P(request: pytest.FixtureRequest) -> rq.Protos:
    if request.param == "tf":
        pytest.importorskip("tensorflow")
    return rq.Protos(request.param)


def refused(call: Any, reason: Reason = Reason.MALFORMED_REQUEST) -> Reject:
    with pytest.raises(Reject) as info:
        call()
    assert info.value.reason is reason
    return info.value


class TestOpsInGraphs:
    def test_direct_node(self, P: rq.Protos) -> None:
        """A ReadFile node of the client's graph is reported with its place."""
        g = P.graph([P.node("c", "Const"), P.node("read", "ReadFile")])
        result = inspect("CreateSession", rq.create_session(g))
        assert ops(result) == {"Const": 'graph_def.node[0] "c"',
                               "ReadFile": 'graph_def.node[1] "read"'}
        assert result.nodes == 2

    def test_library_function_called_as_op(self, P: rq.Protos) -> None:
        """A node whose op is a library function leads into it, and on into what it calls."""
        f = P.function("f", P.node("call_g", "g"))
        g = P.function("g", P.node("w", "WriteFile"))
        result = inspect("CreateSession", rq.create_session(
            P.graph([P.node("n", "f")], [f, g])))
        assert ops(result) == {"WriteFile": 'graph_def.library.function["g"].node_def[0] "w"'}
        assert set(result.defines) == {"f", "g"}

    def test_function_attr(self, P: rq.Protos) -> None:
        """StatefulPartitionedCall's `f` attr leads into a body holding PyFunc."""
        body = P.function("body", P.node("py", "PyFunc"))
        call = P.node("call", "StatefulPartitionedCall", f=P.func("body"))
        assert "PyFunc" in ops(inspect("CreateSession", rq.create_session(P.graph([call], [body]))))

    def test_list_of_functions(self, P: rq.Protos) -> None:
        """Case's `branches` list names several functions; each is followed."""
        a = P.function("a", P.node("x", "Identity"))
        b = P.function("b", P.node("r", "ReadFile"))
        case = P.node("case", "Case", branches=P.funcs("a", "b"))
        assert {"Identity", "ReadFile", "Case"} <= set(ops(inspect(
            "CreateSession", rq.create_session(P.graph([case], [a, b])))))

    def test_while_body(self, P: rq.Protos) -> None:
        """A While's body function is walked, however deep the WriteFile sits in it."""
        inner = P.function("inner", P.node("w", "WriteFile"))
        body = P.function("body", P.node("if", "If", then_branch=P.func("inner"),
                                          else_branch=P.func("inner")))
        cond = P.function("cond", P.node("less", "Less"))
        loop = P.node("loop", "While", cond=P.func("cond"), body=P.func("body"))
        result = ops(inspect("CreateSession", rq.create_session(
            P.graph([loop], [inner, body, cond]))))
        assert {"While", "If", "Less", "WriteFile"} <= set(result)

    def test_function_in_call_attrs(self, P: rq.Protos) -> None:
        """A function passed as an attr of a function call (to fill a placeholder) is walked."""
        hidden = P.function("hidden", P.node("r", "ReadFile"))
        outer = P.function("outer", P.node("x", "Identity"))
        call = P.node("call", "PartitionedCall", f=P.func("outer", g=P.func("hidden")))
        assert "ReadFile" in ops(inspect("CreateSession", rq.create_session(
            P.graph([call], [outer, hidden]))))

    def test_uncalled_library_function(self, P: rq.Protos) -> None:
        """Every library function is walked, called or not: it stays callable later."""
        spare = P.function("spare", P.node("py", "EagerPyFunc"))
        assert "EagerPyFunc" in ops(inspect("CreateSession", rq.create_session(
            P.graph([P.node("c", "Const")], [spare]))))

    def test_gradient_function(self, P: rq.Protos) -> None:
        """A GradientDef's gradient function is walked; a missing one is refused up front."""
        f = P.function("f", P.node("x", "Identity"))
        grad = P.function("f_grad", P.node("py", "PyFunc"))
        data = rq.create_session(P.graph([], [f, grad], gradients=(("f", "f_grad"),)))
        assert "PyFunc" in ops(inspect("CreateSession", data))
        missing = rq.create_session(P.graph([], [f], gradients=(("f", "nowhere"),)))
        assert "nowhere" in refused(lambda: inspect("CreateSession", missing)).message

    def test_signature_default_names_function(self, P: rq.Protos) -> None:
        """A func-valued default of a function's attr is followed like any attr."""
        hidden = P.function("hidden", P.node("r", "ReadFile"))
        f = P.function("f", P.node("x", "Identity"))
        attr = f.signature.attr.add(name="g", type="func")
        attr.default_value.func.name = "hidden"
        assert "ReadFile" in ops(inspect("CreateSession", rq.create_session(
            P.graph([], [f, hidden]))))

    def test_second_occurrence_of_graph_def(self, P: rq.Protos) -> None:
        """graph_def sent twice merges: the nodes of the second are run, so reported."""
        data = (rq.create_session(P.graph([P.node("c", "Const")]))
                + rq.create_session(P.graph([P.node("r", "ReadFile")])))
        assert ops(inspect("CreateSession", data)) == {
            "Const": 'graph_def.node[0] "c"', "ReadFile": 'graph_def.node[1] "r"'}

    def test_second_occurrence_of_library(self, P: rq.Protos) -> None:
        """A second `library` field inside graph_def adds its functions."""
        g1 = P.graph([P.node("n", "f")], [P.function("f", P.node("x", "Identity"))])
        g2 = P.GraphDef()
        g2.library.function.append(P.function("g", P.node("w", "WriteFile")))
        data = rq.ld(1, g1.SerializeToString() + g2.SerializeToString())
        assert "WriteFile" in ops(inspect("CreateSession", data))

    def test_last_attr_wins(self, P: rq.Protos) -> None:
        """A node sent in two parts merges, and an attr key sent twice keeps the last
        value, as TF's parser does: the call goes to the second function only."""
        first = P.node("call", "PartitionedCall", f=P.func("first"))
        second = P.NodeDef()
        second.attr["f"].CopyFrom(P.func("second"))
        data = rq.ld(1, b"s") + rq.ld(2, rq.ld(1, first.SerializeToString()
                                               + second.SerializeToString()))
        result = inspect("ExtendSession", data)
        assert [r.name for r in result.function_refs] == ["second"]

    def test_extend_session_reports_earlier_functions(self, P: rq.Protos) -> None:
        """ExtendSession may call functions of the session's graph: references, not refusals."""
        call = P.node("call", "PartitionedCall", f=P.func("earlier"))
        result = inspect("ExtendSession", rq.extend_session("s1", P.graph([call])))
        (ref,) = result.function_refs
        assert (ref.name, ref.caller) == ("earlier", None)
        assert ref.where == 'graph_def.node[0] "call".attr["f"]'

    def test_symbolic_gradient_of_an_op(self, P: rq.Protos) -> None:
        """SymbolicGradient(f=ReadFile) instantiates an op's gradient: the op is reported."""
        node = P.node("g", "SymbolicGradient", f=P.func("ReadFile"))
        assert "ReadFile" in ops(inspect("CreateSession", rq.create_session(P.graph([node]))))


class TestRefusedGraphs:
    def test_self_recursion(self, P: rq.Protos) -> None:
        """A function that calls itself is refused (CVE-2022-23591)."""
        f = P.function("f", P.node("again", "f"))
        e = refused(lambda: inspect("CreateSession", rq.create_session(P.graph([], [f]))))
        assert "recursion" in e.message

    def test_mutual_recursion_through_attrs(self, P: rq.Protos) -> None:
        """f -> (While body) g -> f is a cycle too."""
        f = P.function("f", P.node("loop", "While", body=P.func("g"), cond=P.func("c")))
        g = P.function("g", P.node("call", "StatefulPartitionedCall", f=P.func("f")))
        c = P.function("c", P.node("x", "Less"))
        refused(lambda: inspect("CreateSession", rq.create_session(P.graph([], [f, g, c]))))

    def test_undefined_function_in_create_session(self, P: rq.Protos) -> None:
        """Nothing precedes CreateSession: a call to a missing function fails in TF too."""
        call = P.node("call", "PartitionedCall", f=P.func("missing"))
        refused(lambda: inspect("CreateSession", rq.create_session(P.graph([call]))))

    def test_two_different_functions_same_name(self, P: rq.Protos) -> None:
        """Two bodies under one name would leave the walk judging the wrong one."""
        a = P.function("f", P.node("x", "Identity"))
        b = P.function("f", P.node("r", "ReadFile"))
        refused(lambda: inspect("CreateSession", rq.create_session(P.graph([], [a, b]))))

    def test_depth_bound(self, P: rq.Protos) -> None:
        """A chain of calls deeper than MAX_CALL_DEPTH is refused as a limit."""
        n = graphs.MAX_CALL_DEPTH + 1
        chain = [P.function(f"f{i}", P.node("c", f"f{i + 1}")) for i in range(n)]
        chain.append(P.function(f"f{n}", P.node("x", "Identity")))
        e = refused(lambda: inspect("CreateSession", rq.create_session(P.graph([], chain))),
                    Reason.LIMIT_EXCEEDED)
        assert e.code is Code.RESOURCE_EXHAUSTED
        ok = rq.create_session(P.graph([], chain[-graphs.MAX_CALL_DEPTH:]))
        assert "Identity" in ops(inspect("CreateSession", ok))

    def test_node_without_op(self, P: rq.Protos) -> None:
        refused(lambda: inspect("CreateSession", rq.create_session(P.graph([P.node("n", "")]))))


class TestEager:
    def test_enqueue_operation(self, P: rq.Protos) -> None:
        """An eager ReadFile is an op use; the context is a used handle."""
        result = inspect("Enqueue", rq.enqueue(7, rq.op_item("ReadFile")))
        assert ops(result) == {"ReadFile": 'queue[0].operation "ReadFile"'}
        assert [(h.kind, h.value, h.creates) for h in result.handles] == [("context", "7", False)]

    def test_registered_function_then_called(self, P: rq.Protos) -> None:
        """RegisterFunction then a call to it: the body's ops count, the call is no reference."""
        fdef = P.function("__inference_f_1", P.node("w", "WriteFile"))
        data = rq.enqueue(1, rq.register_item(fdef),
                          rq.op_item("__inference_f_1", is_function=True))
        result = inspect("Enqueue", data)
        assert set(ops(result)) == {"WriteFile"}
        assert result.function_refs == () and result.defines == ("__inference_f_1",)

    def test_call_to_earlier_registration(self, P: rq.Protos) -> None:
        """A call to a function this request does not define is a FunctionRef (the stateful
        layer checks who registered it) and, as its name could be an op, an OpUse."""
        result = inspect("Enqueue", rq.enqueue(1, rq.op_item("__inference_f_1", is_function=True)))
        assert [r.name for r in result.function_refs] == ["__inference_f_1"]
        assert set(ops(result)) == {"__inference_f_1"}

    def test_call_before_its_registration(self, P: rq.Protos) -> None:
        """Items run in order: a call before the RegisterFunction item is not covered by it."""
        fdef = P.function("f", P.node("x", "Identity"))
        result = inspect("Enqueue", rq.enqueue(1, rq.op_item("f", is_function=True),
                                               rq.register_item(fdef)))
        assert [r.name for r in result.function_refs] == ["f"]

    def test_register_library_and_body_refs(self, P: rq.Protos) -> None:
        """A registered body may call library functions (followed) and earlier ones (refs)."""
        lib = P.FunctionDefLibrary()
        lib.function.append(P.function("helper", P.node("py", "EagerPyFunc")))
        fdef = P.function("main", P.node("a", "helper"),
                          P.node("b", "PartitionedCall", f=P.func("older")))
        result = inspect("Enqueue", rq.enqueue(1, rq.register_item(fdef, lib)))
        assert "EagerPyFunc" in ops(result)
        (ref,) = result.function_refs
        assert (ref.name, ref.caller) == ("older", "main")
        assert ref.where.startswith('queue[0].register_function.function_def["main"].node_def[1]')

    def test_attr_function_on_operation(self, P: rq.Protos) -> None:
        """An eager op's func attr naming a registered-here function leads into its body."""
        fdef = P.function("body", P.node("r", "ReadFile"))
        data = rq.enqueue(1, rq.register_item(fdef),
                          rq.op_item("StatefulPartitionedCall", {"f": P.func("body")}))
        assert {"ReadFile", "StatefulPartitionedCall"} <= set(ops(inspect("Enqueue", data)))

    def test_second_queue_occurrence(self, P: rq.Protos) -> None:
        """Queue items of two concatenated EnqueueRequests are all walked."""
        data = rq.enqueue(1, rq.op_item("AddV2")) + rq.enqueue(1, rq.op_item("WriteFile"))
        assert set(ops(inspect("StreamingEnqueue", data))) == {"AddV2", "WriteFile"}

    def test_recursive_registration(self, P: rq.Protos) -> None:
        fdef = P.function("f", P.node("again", "StatefulPartitionedCall", f=P.func("f")))
        refused(lambda: inspect("Enqueue", rq.enqueue(1, rq.register_item(fdef))))

    def test_remove_function(self, P: rq.Protos) -> None:
        """Removing a function names it as a handle of the context (the stateful layer
        forgets it once the server has removed it); it calls nothing."""
        result = inspect("Enqueue", rq.enqueue(1, rq.remove_item("f")))
        assert result.function_refs == ()
        assert [(h.kind, h.value) for h in result.handles] == [("context", "1"), ("function", "f")]

    def test_run_component_function(self, P: rq.Protos) -> None:
        result = inspect("RunComponentFunction", rq.run_component_function(9, "comp"))
        assert [r.name for r in result.function_refs] == ["comp"]
        assert result.handles[0].value == "9"

    def test_create_context(self, P: rq.Protos) -> None:
        """CreateContext creates its context id and names every task address."""
        server = P.ServerDef(job_name="worker", task_index=0, protocol="grpc")
        server.cluster.CopyFrom(P.cluster({"worker": ["10.0.0.1:2222", "10.0.0.2:2222"],
                                           "localhost": ["localhost:40000"]}))
        result = inspect("CreateContext", rq.create_context(2**64 - 1, server, clear=True))
        assert result.handles[0] == facts.Handle("context", str(2**64 - 1), True, "context_id")
        assert [(a.address, a.job, a.task) for a in result.addresses] == [
            ("10.0.0.1:2222", "worker", 0), ("10.0.0.2:2222", "worker", 1),
            ("localhost:40000", "localhost", 0)]
        assert result.addresses[1].where == 'server_def.cluster.job[0] "worker".tasks[1]'
        assert [s.name for s in result.settings] == ["clear_existing_contexts"]


class TestClusterAndDebug:
    def test_session_config_cluster(self, P: rq.Protos) -> None:
        config = P.ConfigProto()
        config.cluster_def.CopyFrom(P.cluster({"ps": ["169.254.169.254:80"]}))
        result = inspect("CreateSession", rq.create_session(P.graph(), config))
        assert [(a.address, a.where) for a in result.addresses] == [
            ("169.254.169.254:80", 'config.cluster_def.job[0] "ps".tasks[0]')]

    def test_worker_session_nested_config(self, P: rq.Protos) -> None:
        """ServerDef.default_session_config.cluster_def addresses count too."""
        server = P.ServerDef()
        server.cluster.CopyFrom(P.cluster({"worker": ["a:1"]}))
        server.default_session_config.cluster_def.CopyFrom(P.cluster({"evil": ["b:2"]}))
        result = inspect("CreateWorkerSession", rq.create_worker_session("ws", server))
        assert [a.address for a in result.addresses] == ["a:1", "b:2"]
        assert result.handles[0] == facts.Handle("session", "ws", True, "session_handle")

    def test_run_step_debug_options(self, P: rq.Protos) -> None:
        """RunOptions debug watches insert Debug ops with URLs: both are reported."""
        options = P.RunOptions()
        options.debug_options.CopyFrom(P.debug_watch(["DebugIdentity"], ["grpc://attacker:1"]))
        result = inspect("RunStep", rq.run_step("s", options, partial="p"))
        assert [u.url for u in result.debug_urls] == ["grpc://attacker:1"]
        assert ops(result) == {
            "DebugIdentity": "options.debug_options.debug_tensor_watch_opts[0].debug_ops[0]"}
        assert [(h.kind, h.value) for h in result.handles] == [("session", "s"),
                                                              ("partial_run", "p")]

    def test_make_callable_and_register_graph_debug(self, P: rq.Protos) -> None:
        callable_options = P.CallableOptions()
        callable_options.run_options.debug_options.CopyFrom(
            P.debug_watch(["DebugNumericSummary(mute_if_healthy=true)"], ["file:///etc/x"]))
        result = inspect("MakeCallable", rq.make_callable("s", callable_options))
        assert [u.url for u in result.debug_urls] == ["file:///etc/x"]
        assert set(ops(result)) == {"DebugNumericSummary"}
        data = rq.register_graph("s", P.graph([P.node("r", "_Recv")]),
                                 P.debug_watch([], ["file:///tmp/d"]))
        assert [u.url for u in inspect("RegisterGraph", data).debug_urls] == ["file:///tmp/d"]

    def test_url_in_op_attrs(self, P: rq.Protos) -> None:
        """PrintV2 to file://, a debug op's URLs and a call attr filling such a sink."""
        sink = P.function("sink", P.node("p", "PrintV2"))
        nodes = [P.node("p", "PrintV2", output_stream=P.s(b"file:///etc/cron.d/x")),
                 P.node("call", "PartitionedCall",
                        f=P.func("sink", out=P.s(b"file:///tmp/y")))]
        result = inspect("CreateSession", rq.create_session(P.graph(nodes, [sink])))
        assert [u.url for u in result.debug_urls] == ["file:///etc/cron.d/x", "file:///tmp/y"]
        assert result.debug_urls[1].where == 'graph_def.node[1] "call".attr["f"].func.attr["out"]'

    def test_tf2xla_dump_dir(self, P: rq.Protos) -> None:
        config = P.ConfigProto()
        config.experimental.tf2xla_dump_dir = "/tmp/dumps"
        result = inspect("CreateSession", rq.create_session(P.graph(), config))
        assert [(s.name, s.value) for s in result.settings] == [("tf2xla_dump_dir", "/tmp/dumps")]


class TestBounds:
    def test_nodes(self, P: rq.Protos, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(graphs, "MAX_NODES", 3)
        g = P.graph([P.node(f"n{i}", "Const") for i in range(4)])
        refused(lambda: inspect("CreateSession", rq.create_session(g)), Reason.LIMIT_EXCEEDED)

    def test_distinct_ops(self, P: rq.Protos, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(facts, "MAX_OPS", 2)
        g = P.graph([P.node(f"n{i}", f"Op{i}") for i in range(3)])
        refused(lambda: inspect("CreateSession", rq.create_session(g)), Reason.LIMIT_EXCEEDED)

    def test_functions(self, P: rq.Protos, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(graphs, "MAX_FUNCTIONS", 2)
        g = P.graph([], [P.function(f"f{i}") for i in range(3)])
        refused(lambda: inspect("CreateSession", rq.create_session(g)), Reason.LIMIT_EXCEEDED)

    def test_attr_values(self, P: rq.Protos, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(graphs, "MAX_ATTR_VALUES", 5)
        g = P.graph([P.node("n", "Const", **{f"a{i}": P.s(b"x") for i in range(6)})])
        refused(lambda: inspect("CreateSession", rq.create_session(g)), Reason.LIMIT_EXCEEDED)

    def test_name_length(self, P: rq.Protos) -> None:
        """An op name longer than MAX_NAME_CHARS is refused, not truncated."""
        g = P.graph([P.node("n", "X" * (facts.MAX_NAME_CHARS + 1))])
        refused(lambda: inspect("CreateSession", rq.create_session(g)), Reason.LIMIT_EXCEEDED)

    def test_where_is_bounded(self, P: rq.Protos) -> None:
        """A long node name is cut inside `where`, which never passes MAX_WHERE_CHARS."""
        g = P.graph([P.node("n" * 10_000, "ReadFile")])
        (use,) = inspect("CreateSession", rq.create_session(g)).ops
        assert len(use.where) <= facts.MAX_WHERE_CHARS and use.where.endswith('..."')

    def test_addresses(self, P: rq.Protos, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(facts, "MAX_ADDRESSES", 2)
        config = P.ConfigProto()
        config.cluster_def.CopyFrom(P.cluster({"w": ["a:1", "b:1", "c:1"]}))
        refused(lambda: inspect("CreateSession", rq.create_session(P.graph(), config)),
                Reason.LIMIT_EXCEEDED)

    def test_field_count(self, P: rq.Protos, monkeypatch: pytest.MonkeyPatch) -> None:
        """Graph requests are counted on the wire against MAX_GRAPH_FIELDS before parsing."""
        monkeypatch.setattr(parsing, "MAX_GRAPH_FIELDS", 50)
        from proxy.inspect.distributed import master
        monkeypatch.setattr(master, "MAX_GRAPH_FIELDS", 50)
        g = P.graph([P.node(f"node{i}", "NoOp") for i in range(30)])
        refused(lambda: inspect("CreateSession", rq.create_session(g)), Reason.LIMIT_EXCEEDED)


class TestMalformed:
    def test_not_protobuf(self) -> None:
        for _, inspector in METHODS.values():
            refused(lambda inspector=inspector: inspector(b"\xff\xff\xff"))

    def test_unknown_top_level_field(self) -> None:
        e = refused(lambda: inspect("KeepAlive", rq.f64(1, 5) + rq.vi(99, 1)))
        assert "99" in e.message

    def test_unknown_field_deep_inside(self, P: rq.Protos) -> None:
        """An unknown field inside an AttrValue inside a NodeDef is refused too."""
        attr = P.s(b"x").SerializeToString() + rq.vi(77, 1)
        node = P.node("n", "Const").SerializeToString() + rq.ld(5, rq.ld(1, b"k") + rq.ld(2, attr))
        refused(lambda: inspect("CreateSession", rq.ld(1, rq.ld(1, node))))


class TestCoordinationAndHandles:
    def test_register_task(self) -> None:
        data = rq.f64(3, 42) + rq.ld(5, rq.ld(1, b"worker") + rq.vi(2, 1))
        result = inspect("RegisterTask", data)
        assert [(h.kind, h.value, h.creates) for h in result.handles] == [
            ("task", "worker/1", True), ("incarnation", "42", True)]

    def test_key_value(self) -> None:
        insert = inspect("InsertKeyValue", rq.ld(1, rq.ld(1, b"k") + rq.ld(2, b"v")))
        delete = inspect("DeleteKeyValue", rq.ld(1, b"dir/") + rq.vi(2, 1))
        assert insert.handles[0] == facts.Handle("kv_key", "k", True, "kv.key")
        assert delete.handles[0].kind == "kv_dir"

    def test_worker_handles(self) -> None:
        run = inspect("RunGraph", rq.ld(1, b"g1") + rq.vi(2, 77) + rq.ld(8, b"s1") + rq.vi(10, 1))
        recv = inspect("RecvTensor", rq.vi(1, 77) + rq.ld(2, b"key"))
        assert [(h.kind, h.value, h.creates) for h in run.handles] == [
            ("session", "s1", False), ("graph", "g1", False), ("step", "77", True)]
        # Without create_worker_session_called the worker runs its legacy session's graph.
        legacy = inspect("RunGraph", rq.ld(1, b"g1") + rq.vi(2, 77) + rq.ld(8, b"s1"))
        assert legacy.handles[0].value == ""
        assert recv.handles == (facts.Handle("step", "77", False, "step_id"),)

    def test_integer_handles_are_unsigned(self) -> None:
        """An eager RecvTensor names its context (a fixed64) in the int64 step_id: both are
        reported as the same unsigned value."""
        context = 2**64 - 5
        recv = inspect("RecvTensor", rq.vi(1, context))  # int64 -5 on the wire
        created = inspect("CreateContext", rq.create_context(context))
        assert recv.handles[0].value == created.handles[0].value == str(context)

    def test_callable_handles(self) -> None:
        result = inspect("RunCallable", rq.ld(1, b"s") + rq.vi(2, 3))
        assert [(h.kind, h.value) for h in result.handles] == [("session", "s"), ("callable", "3")]

    def test_response_handles(self) -> None:
        assert distributed.response_handles(
            PATH["CreateSession"], rq.ld(1, b"abc") + rq.vi(2, 1)) == (
            facts.Handle("session", "abc", True, "session_handle"),)
        assert distributed.response_handles(PATH["RegisterGraph"], rq.ld(1, b"g"))[0].value == "g"
        assert distributed.response_handles(PATH["MakeCallable"], rq.vi(1, 5))[0].value == "5"
        assert distributed.response_handles(PATH["RunStep"], b"") == ()


class TestMethodTable:
    APPENDIX_A_COUNTS: ClassVar[dict[str, int]] = {
                         "/tensorflow.WorkerService/": 16, "/tensorflow.MasterService/": 10,
                         "/tensorflow.eager.EagerService/": 8,
                         "/tensorflow.CoordinationService/": 19}

    def test_paths(self) -> None:
        """Each service has its full method set, under the paths the servers register."""
        for prefix, count in self.APPENDIX_A_COUNTS.items():
            assert sum(p.startswith(prefix) for p in METHODS) == count
        assert not any(p.startswith("/tensorflow.grpc.") or "Profiler" in p for p in METHODS)

    def test_kinds(self) -> None:
        kinds = {p: k for p, (k, _) in METHODS.items()}
        assert kinds.pop("/tensorflow.eager.EagerService/StreamingEnqueue") == "stream_stream"
        assert set(kinds.values()) == {"unary_unary"}

    def test_empty_requests(self) -> None:
        """An empty message is valid protobuf: every inspector returns facts for it."""
        for path, (_, inspector) in METHODS.items():
            if path.endswith("RunComponentFunction"):
                refused(lambda inspector=inspector: inspector(b""))  # an operation names something
            else:
                assert isinstance(inspector(b""), distributed.ClusterFacts), path

    def test_op_use_is_plain(self) -> None:
        assert OpUse("A", "w") == OpUse("A", "w") and hash(OpUse("A", "w"))
