"""Property tests (hypothesis) for proxy/inspect/distributed.

- Random bytes, and mutations of valid requests, through every inspector end in
  ClusterFacts or a Reject, never any other exception.
- Random function libraries with random call edges: the inspector refuses exactly those
  whose call graph has a cycle (checked against an independent cycle finder), and
  otherwise reports every op of every body.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.errors import Reason, Reject
from proxy.inspect.distributed import METHODS, ClusterFacts
from tests import distributed_requests as rq

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
P = rq.Protos("ours")
INSPECTORS = sorted(METHODS)


def _ends_well(inspector: Callable[[bytes], ClusterFacts], data: bytes) -> None:
    try:
        result = inspector(data)
    except Reject:
        return
    assert isinstance(result, ClusterFacts)


@FUZZ
@given(path=st.sampled_from(INSPECTORS), data=st.binary(max_size=300))
def test_random_bytes(path: str, data: bytes) -> None:
    """Arbitrary bytes never crash an inspector."""
    _ends_well(METHODS[path][1], data)


def _valid_requests() -> list[tuple[str, bytes]]:
    body = P.function("body", P.node("r", "ReadFile"),
                      P.node("c", "StatefulPartitionedCall", f=P.func("leaf")))
    leaf = P.function("leaf", P.node("p", "PrintV2", output_stream=P.s(b"file:///x")))
    graph = P.graph([P.node("w", "While", body=P.func("body"), cond=P.func("leaf"))],
                    [body, leaf], gradients=(("body", "leaf"),))
    server = P.ServerDef(job_name="worker")
    server.cluster.CopyFrom(P.cluster({"worker": ["a:1", "b:2"]}))
    options = P.RunOptions()
    options.debug_options.CopyFrom(P.debug_watch(["DebugIdentity"], ["grpc://x:1"]))
    path = {p.rsplit("/", 1)[1]: p for p in METHODS}
    return [
        (path["CreateSession"], rq.create_session(graph)),
        (path["ExtendSession"], rq.extend_session("s", graph)),
        (path["RegisterGraph"], rq.register_graph("s", graph, options.debug_options)),
        (path["CreateContext"], rq.create_context(5, server)),
        (path["RunStep"], rq.run_step("s", options)),
        (path["Enqueue"], rq.enqueue(5, rq.register_item(body), rq.op_item("body"),
                                     rq.op_item("If", {"then_branch": P.func("leaf")}))),
    ]


VALID = _valid_requests()


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    path, data = draw(st.sampled_from(VALID))
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        choice = draw(st.integers(0, 3))
        at = draw(st.integers(0, max(len(buf) - 1, 0)))
        if choice == 0 and buf:
            buf[at] ^= 1 << draw(st.integers(0, 7))
        elif choice == 1:
            del buf[at:at + draw(st.integers(1, 8))]
        elif choice == 2:
            buf[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            buf += bytes(buf[at:at + draw(st.integers(1, 64))])
    return path, bytes(buf)


@FUZZ
@given(case=mutated())
def test_mutated_requests(case: tuple[str, bytes]) -> None:
    """Bit flips, cuts, insertions and repeats of real-shaped requests never crash."""
    path, data = case
    _ends_well(METHODS[path][1], data)


def test_valid_requests_are_accepted() -> None:
    """The seeds themselves pass, so the mutation test starts from accepted requests."""
    for path, data in VALID:
        assert isinstance(METHODS[path][1](data), ClusterFacts), path


# -- random call graphs -----------------------------------------------------------------------

@st.composite
def libraries(draw: st.DrawFn) -> tuple[dict[int, list[tuple[str, int]]], dict[int, str]]:
    """Up to 6 functions; each calls others by op name, func attr or func list."""
    n = draw(st.integers(1, 6))
    calls = {i: draw(st.lists(st.tuples(st.sampled_from(["op", "attr", "list"]),
                                        st.integers(0, n - 1)), max_size=3)) for i in range(n)}
    payload = {i: draw(st.sampled_from(["Identity", "ReadFile", "PyFunc", "AddV2"]))
               for i in range(n)}
    return calls, payload


def _has_cycle(calls: dict[int, list[tuple[str, int]]]) -> bool:
    edges = {i: {j for _, j in c} for i, c in calls.items()}
    remaining = dict(edges)
    while True:  # Kahn: strip functions nobody left calls; a cycle never empties
        called = {j for targets in remaining.values() for j in targets}
        sources = [i for i in remaining if i not in called]
        if not sources:
            return bool(remaining)
        for i in sources:
            del remaining[i]


@FUZZ
@given(lib=libraries())
def test_call_graphs(lib: tuple[dict[int, list[tuple[str, int]]], dict[int, str]]) -> None:
    calls, payload = lib
    functions = []
    for i, targets in calls.items():
        nodes = [P.node("payload", payload[i])]
        for k, (how, j) in enumerate(targets):
            if how == "op":
                nodes.append(P.node(f"c{k}", f"f{j}"))
            elif how == "attr":
                nodes.append(P.node(f"c{k}", "PartitionedCall", f=P.func(f"f{j}")))
            else:
                nodes.append(P.node(f"c{k}", "Case", branches=P.funcs(f"f{j}")))
        functions.append(P.function(f"f{i}", *nodes))
    data = rq.create_session(P.graph([P.node("top", "f0")], functions))
    try:
        result = METHODS["/tensorflow.MasterService/CreateSession"][1](data)
    except Reject as e:
        assert e.reason is Reason.MALFORMED_REQUEST and "recursion" in e.message
        assert _has_cycle(calls)
        return
    assert not _has_cycle(calls)
    assert set(payload.values()) <= {use.op for use in result.ops}
