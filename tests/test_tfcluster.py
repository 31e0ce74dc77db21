"""End-to-end over a real TF 2.21 cluster (tests/tfcluster.py): two tf.distribute.Server
workers and a TF client, each in its own network namespace, every route between them
through a recording forwarder. Proves the harness (the client's actions work through
the routes and only through them) and checks the inspector against the real traffic:
every recorded request parses with no unknown field and yields the facts expected."""

from __future__ import annotations

import importlib.util
import json
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from proxy.inspect.distributed import METHODS, ClusterFacts, response_handles
from tests.recording_forwarder import RecordedCall, RecordingForwarder
from tests.tfcluster import CLIENT, TASKS, WORKERS, Cluster, namespaces_unavailable

pytestmark = pytest.mark.tf
SECRET = "top secret\n"
KINDS = {path: kind for path, (kind, _) in METHODS.items()}


@dataclass
class Recorded:
    cluster: Cluster
    forwarders: dict[tuple[str, str], RecordingForwarder]
    workdir: pathlib.Path
    connect: tuple[dict[str, Any], list[RecordedCall]] = field(default=({}, []))

    def calls(self) -> list[RecordedCall]:
        return sorted((c for f in self.forwarders.values() for c in f.calls()),
                      key=lambda c: c.seq)

    def run(self, action: str, **args: Any) -> tuple[dict[str, Any], list[RecordedCall]]:
        """One client action and the calls it caused on every route."""
        for forwarder in self.forwarders.values():
            forwarder.clear()
        return self.cluster.client.run(action, **args), self.calls()


def _build(workdir: pathlib.Path) -> Recorded:
    forwarders, routes = {}, {}
    for source in TASKS:
        for target in TASKS:
            if source != target:
                listen = workdir / f"fwd-{source.name}-{target.name}.sock"
                forwarders[(source.name, target.name)] = RecordingForwarder(
                    f"unix:{listen}", f"unix:{workdir / target.name}.sock", kinds=KINDS,
                    route=f"{source.name}-{target.name}", record_dir=workdir / "records")
                routes[(source.name, target.name)] = f"unix:{listen}"
    return Recorded(Cluster(workdir, routes), forwarders, workdir)


def _start(recorded: Recorded) -> Iterator[Recorded]:
    for forwarder in recorded.forwarders.values():
        forwarder.start()
    try:
        with recorded.cluster:
            recorded.connect = recorded.run("connect")
            yield recorded
    finally:
        for forwarder in recorded.forwarders.values():
            forwarder.stop()


def _skip_without_cluster() -> None:
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    _skip_without_cluster()
    workdir = tmp_path_factory.mktemp("tfcluster")
    (workdir / "secret.txt").write_text(SECRET)
    yield from _start(_build(workdir))


def facts_of(calls: list[RecordedCall], method: str | None = None) -> list[ClusterFacts]:
    """Inspect every recorded request (of `method`, if given): any Reject fails the test."""
    return [METHODS[c.method][1](request) for c in calls
            if method is None or c.method.endswith("/" + method) for request in c.requests]


def ops(calls: list[RecordedCall]) -> set[str]:
    return {use.op for f in facts_of(calls) for use in f.ops}


def methods(calls: list[RecordedCall], route: str, service: str = "") -> list[str]:
    """Method names called on `route` (of `service` only, if given). Eager clients also
    send late, asynchronous handle releases (Enqueue) left over from earlier actions."""
    return [c.method.rsplit("/", 1)[1] for c in calls
            if c.route == route and (not service or f".{service}/" in c.method)]


class TestEager:
    def test_connect(self, recorded: Recorded) -> None:
        """Connecting asks each worker for its devices, then creates one context on each,
        naming every task's address; no call leaves a worker."""
        result, calls = recorded.connect
        assert result["ok"] and "/job:worker/replica:0/task:1/device:CPU:0" in result["value"]
        for worker in WORKERS:
            assert methods(calls, f"client0-{worker.name}") == ["GetStatus", "CreateContext"]
        created = facts_of(calls, "CreateContext")
        contexts = {h.value for f in created for h in f.handles if h.kind == "context" and h.creates}
        assert len(contexts) == 1  # the same context id on both workers
        assert {a.address for a in created[0].addresses} == {t.address for t in TASKS}
        assert not any(c.route.startswith("worker") for c in calls)

    def test_eager_op(self, recorded: Recorded) -> None:
        """Remote eager ops arrive as Enqueue items; the client pulls the result."""
        result, calls = recorded.run("eager_op")
        assert result == {"ok": True, "value": [3.0, 5.0, 7.0]}
        assert {"Mul", "AddV2"} <= ops(calls)
        assert "RecvTensor" in methods(calls, "client0-worker0")

    def test_eager_recv_tensor_names_the_context(self, recorded: Recorded) -> None:
        """The step of an eager RecvTensor is the context id (reported as the same value)."""
        _, calls = recorded.run("eager_op")
        (context,) = {h.value for f in facts_of(recorded.connect[1], "CreateContext")
                      for h in f.handles}
        steps = {h.value for f in facts_of(calls, "RecvTensor") for h in f.handles}
        assert steps == {context}

    def test_remote_function(self, recorded: Recorded) -> None:
        """A tf.function is registered on every worker, then called by name on one."""
        result, calls = recorded.run("remote_function")
        assert result == {"ok": True, "value": 14.0}
        facts = facts_of(calls)
        (name,) = {d for f in facts for d in f.defines}
        assert name.startswith("__inference_square_sum")
        assert {"Mul", "Sum"} <= {u.op for f in facts for u in f.ops}
        assert {"StreamingEnqueue"} <= set(methods(calls, "client0-worker1"))
        # The call names the function; sent after the registration it is a reference.
        assert {r.name for f in facts for r in f.function_refs} <= {name}

    def test_no_connection_back_by_default(self, recorded: Recorded) -> None:
        """With TF 2.21's defaults the workers never dial the client: inputs are pushed."""
        for action in ("remote_function_local_input", "eager_op"):
            result, calls = recorded.run(action)
            assert result["ok"], result
            assert [c.method for c in calls if c.route.endswith("-client0")] == []


class TestSession:
    def test_graph_across_workers(self, recorded: Recorded) -> None:
        """TF1: the client talks to the master only; the master registers and runs the
        other worker's partition itself, and the workers exchange tensors directly."""
        result, calls = recorded.run("session")
        assert result == {"ok": True, "value": 42.5}
        assert methods(calls, "client0-worker0", "MasterService") == [
            "CreateSession", "RunStep", "CloseSession"]
        assert {"CreateWorkerSession", "RegisterGraph", "RunGraph", "CleanupGraph",
                "DeleteWorkerSession"} <= set(methods(calls, "worker0-worker1"))
        (create,) = facts_of(calls, "CreateSession")
        assert {"Placeholder", "Mul", "AddV2"} <= {u.op for u in create.ops}
        (register,) = facts_of(calls, "RegisterGraph")
        assert {"_Recv", "_Send", "Mul"} <= {u.op for u in register.ops}

    def test_graph_with_functions(self, recorded: Recorded) -> None:
        """A tf.function (with a while loop) and its gradient in a TF1 graph: the library
        is complete, so nothing is refused, and the loop's body is walked."""
        result, calls = recorded.run("session_function")
        assert result == {"ok": True, "value": [12.0, 12.0]}
        (create,) = facts_of(calls, "CreateSession")
        assert len(create.defines) >= 3 and create.function_refs == ()
        assert {"PartitionedCall", "StatelessWhile", "Less", "Mul"} <= {u.op for u in create.ops}

    def test_handles_match_across_calls(self, recorded: Recorded) -> None:
        """The handle a response creates is the one the following requests use."""
        _, calls = recorded.run("session")
        by_method = {c.method.rsplit("/", 1)[1]: c for c in calls}
        (session,) = response_handles(by_method["CreateSession"].method,
                                      by_method["CreateSession"].responses[0])
        (run_step,) = facts_of(calls, "RunStep")
        assert run_step.handles[0].value == session.value
        (graph,) = response_handles(by_method["RegisterGraph"].method,
                                    by_method["RegisterGraph"].responses[0])
        (run_graph,) = facts_of(calls, "RunGraph")
        kinds = {h.kind: h.value for h in run_graph.handles}
        assert kinds["graph"] == graph.value
        (cleanup,) = facts_of(calls, "CleanupGraph")
        assert cleanup.handles[0].value == kinds["step"]


class TestDangerousOps:
    """Without a guard in front, each attempt reaches the worker: the harness works, and
    the inspector finds the op in what TF actually sent."""

    def test_read_file(self, recorded: Recorded) -> None:
        for action in ("read_file", "function_read_file", "session_read_file"):
            result, calls = recorded.run(action, path=str(recorded.workdir / "secret.txt"))
            assert result == {"ok": True, "value": SECRET}, action
            assert "ReadFile" in ops(calls), action

    def test_write_file(self, recorded: Recorded) -> None:
        target = recorded.workdir / "written.txt"
        result, calls = recorded.run("write_file", path=str(target), contents="pwned")
        assert result == {"ok": True, "value": True} and target.read_text() == "pwned"
        assert "WriteFile" in ops(calls)

    def test_py_function(self, recorded: Recorded) -> None:
        """tf.py_function runs on the client, but the function holding EagerPyFunc is
        registered on the workers, where a later call could run it."""
        result, calls = recorded.run("py_function")
        assert result == {"ok": True, "value": 4.0}
        assert "EagerPyFunc" in ops(calls)

    def test_raw_py_func_runs_on_the_worker(self, recorded: Recorded) -> None:
        """EagerPyFunc sent as an eager op is executed by the worker's Python (here no
        callback holds that token, so it fails there)."""
        result, calls = recorded.run("raw_py_func", token="pyfunc_0")
        assert not result["ok"] and "pyfunc_0" in result["message"]
        assert "EagerPyFunc" in ops(calls)


def test_recorded_files_inspect_cleanly(recorded: Recorded) -> None:
    """Every request message written to the record directory parses with our schema."""
    records = recorded.workdir / "records"
    by_stem = {p.strip("/").replace("/", "."): p for p in METHODS}
    inspected = 0
    for path in sorted(records.glob("*-req*.bin")):
        method = by_stem[path.name.split("-", 3)[3].rsplit("-", 1)[0]]
        assert isinstance(METHODS[method][1](path.read_bytes()), ClusterFacts), path.name
        inspected += 1
    index = [json.loads(line) for line in (records / "index.jsonl").read_text().splitlines()]
    assert inspected >= sum(line["requests"] for line in index) > 0


def test_connection_back_when_send_tensor_rpc_is_off(recorded: Recorded) -> None:
    """With TF_EAGER_REMOTE_USE_SEND_TENSOR_RPC=0 the worker dials the client's own server
    (its address from CreateContext) to pull the client's tensors with RecvTensor.
    Runs last: it replaces the module's client with one started that way."""
    recorded.cluster.restart_client({"TF_EAGER_REMOTE_USE_SEND_TENSOR_RPC": "0"})
    assert recorded.run("connect")[0]["ok"]
    result, calls = recorded.run("remote_function_local_input")
    assert result == {"ok": True, "value": 21.0}
    assert methods(calls, f"worker0-{CLIENT.name}") == ["RecvTensor"]
