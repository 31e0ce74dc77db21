"""Handles and functions bound to the principal that created them (cluster_guard.py,
handles.py), through the real admission path: contexts, sessions, graphs, callables,
steps, registered functions (pending on a stream, committed once answered), and the
table's memory bounds. Requests from TensorFlow's own protos (tf marker) and ours."""

from __future__ import annotations

import copy

import pytest

from proxy import admission
from proxy.call import Call
from proxy.cluster_guard import Exchange
from proxy.errors import Reason, Reject
from proxy.pb import distributed_master_pb2, distributed_worker_pb2
from proxy.state import State, build_state
from tests import distributed_requests as rq
from tests.cluster_helpers import (
    CLIENT,
    CONFIG,
    OTHER,
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
            session_handle="s1", graph_handle="0001", step_id=77,
            create_worker_session_called=True).SerializeToString()
        worker.call("RunGraph", run)
        intruder.refused(Reason.HANDLE_NOT_OWNED, "RunGraph", run)
        intruder.refused(Reason.HANDLE_NOT_OWNED, "RecvTensor", rq.vi(1, 77))  # worker's step
        intruder.call("RecvTensor", rq.vi(1, 78))  # a step tfgate never saw begin passes
        worker.call("CleanupGraph", rq.vi(1, 77))
        intruder.call("RecvTensor", rq.vi(1, 77))

    def test_the_shared_legacy_session_is_refused(self, state: State, P: rq.Protos) -> None:
        worker = Caller(state, WORKER)
        refused = worker.refused(Reason.HANDLE_NOT_OWNED, "RegisterGraph",
                                 rq.register_graph("", P.graph([])))
        assert "legacy session" in refused.message
        Caller(state, CLIENT).call("ListDevices", b"")  # "" lists the cluster's devices
        # Naming its own session without create_worker_session_called, a caller would
        # reach the legacy session (TF's worker ignores the handle then), where graph
        # handles are counters shared by every such caller.
        worker.call("CreateWorkerSession", rq.create_worker_session("s1", P.ServerDef()))
        refused = worker.refused(Reason.HANDLE_NOT_OWNED, "RegisterGraph", rq.register_graph(
            "s1", P.graph([]), in_session=False))
        assert "create_worker_session_called is false" in refused.message
        for method, request in (("RunGraph", distributed_worker_pb2.RunGraphRequest(
                session_handle="s1", graph_handle="0001", step_id=5)),
                                ("DeregisterGraph", distributed_worker_pb2.DeregisterGraphRequest(
                                    session_handle="s1", graph_handle="0001"))):
            worker.refused(Reason.HANDLE_NOT_OWNED, method, request.SerializeToString())

    def test_a_master_task_belongs_to_its_first_master(self, state: State, P: rq.Protos) -> None:
        """A worker deletes every session of `master_task` created under another
        incarnation: naming another master's task would delete its sessions."""
        master, intruder = Caller(state, WORKER), Caller(state, "spiffe://tfgate.test/cluster/worker9")
        chief = "/job:chief/replica:0/task:0"
        master.call("CreateWorkerSession", rq.create_worker_session("s1", P.ServerDef(), chief, 1))
        master.call("CreateWorkerSession", rq.create_worker_session("s2", P.ServerDef(), chief, 2))
        refused = intruder.refused(Reason.HANDLE_NOT_OWNED, "CreateWorkerSession",
                                   rq.create_worker_session("s3", P.ServerDef(), chief, 3))
        assert "master_task" in refused.message
        intruder.call("CreateWorkerSession", rq.create_worker_session(
            "s4", P.ServerDef(), "/job:worker/replica:0/task:9", 1))

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

    def test_requests_awaiting_answers_are_bounded_per_process(self, state: State,
                                                                monkeypatch) -> None:
        """Every call's unanswered requests count against one process-wide cap; answers
        and call ends give them back, so honest calls pass again (nothing leaks)."""
        from proxy import cluster_guard

        client = Caller(state, CLIENT)
        ctx = context(client)
        before = Exchange.waiting
        monkeypatch.setattr(cluster_guard, "MAX_PENDING_PROCESS", before + 3)
        first, second = Exchange(), Exchange()
        enqueue = rq.enqueue(ctx, rq.op_item("Mul"))
        client.call("StreamingEnqueue", enqueue, enqueue, answers=[], exchange=first)
        client.call("StreamingEnqueue", enqueue, answers=[], exchange=second)
        refused = client.refused(Reason.LIMIT_EXCEEDED, "StreamingEnqueue", enqueue,
                                 answers=[], exchange=second)
        assert "in this tfgate process" in refused.message
        admission.answered(state, first, b"")  # one answer frees one place
        client.call("StreamingEnqueue", enqueue, answers=[], exchange=second)
        admission.ended(state, first)
        admission.ended(state, second)
        assert Exchange.waiting == before


def test_a_request_judged_without_an_exchange_holds_no_place(state: State) -> None:
    """`admission.inspect` without the call's Exchange (a judgement with no call to
    answer it): nothing awaits an answer afterwards, so the process-wide count of
    requests awaiting answers is what it was, and nothing it created stays claimed."""
    call = Caller(state, CLIENT)
    path = next(p for p in state.methods.methods if p.endswith("/CreateContext"))
    record = Call(path, "test")
    record.principal = call.principal
    before = Exchange.waiting
    admission.inspect(state, record, state.methods.lookup(path), rq.create_context(31))
    assert Exchange.waiting == before
    context(Caller(state, OTHER), 31)  # context 31 is no one's: another caller may create it
