"""An unmodified TF 2.21 client and cluster through tfgate, over mTLS (tests/tfcluster.py).

Two `tf.distribute.Server` workers and a TF client, each in its own network namespace.
Every route between them is tfgate egress -> mTLS -> tfgate ingress:

    client0 ──plaintext unix──▶ egress(client) ══mTLS══▶ ingress(worker0) ──▶ worker0
    worker0 ──plaintext unix──▶ egress(worker0) ═mTLS══▶ ingress(worker1) ──▶ worker1 (and back)

The client's own TF server sits behind an ingress too, which only workers may call:
TF 2.21 pushes the client's inputs, so nothing uses that route until a client runs with
TF_EAGER_REMOTE_USE_SEND_TENSOR_RPC=0 and workers pull (docs/cluster.md). Each egress
presents its host's certificate and calls its local caller by `listen.local_identity`;
the egresses here enforce no op policy (they lift the whole default denylist, and
their tensor caps are out of reach), so that
what refuses is the worker's own ingress, which is what a cluster must rely on. Every
tfgate runs in this process; the TF processes are shared by the whole module.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from proxy.config import validate_config
from proxy.inspect.dangerous_ops import DEFAULT_DENYLIST
from proxy.server import RunningServer
from tests import distributed_requests as rq
from tests.conftest import Pki
from tests.tfcluster import TASKS, WORKERS, Cluster, namespaces_unavailable

pytestmark = pytest.mark.tf
SECRET = "top secret\n"
CLIENT = "spiffe://tfgate.test/cluster/client"
CLIENT2 = "spiffe://tfgate.test/cluster/client2"
INTRUDER = "spiffe://tfgate.test/intruder"
WORKER_ID = {w.name: f"spiffe://tfgate.test/cluster/{w.name}" for w in WORKERS}
CLIENT_METHODS = ["GetStatus", "CreateContext", "UpdateContext", "Enqueue", "StreamingEnqueue",
                  "WaitQueueDone", "RunComponentFunction", "KeepAlive", "CloseContext",
                  "RecvTensor", "CreateSession", "ExtendSession", "PartialRunSetup", "RunStep",
                  "CloseSession", "ListDevices", "MakeCallable", "RunCallable",
                  "ReleaseCallable"]
WORKER_METHODS = ["GetStatus", "CreateWorkerSession", "DeleteWorkerSession", "RegisterGraph",
                  "DeregisterGraph", "RunGraph", "CleanupGraph", "RecvTensor", "RecvBuf",
                  "CompleteGroup", "CompleteInstance", "GetStepSequence", "MarkRecvFinished"]
ALL_CLUSTER = ["/tensorflow.WorkerService/*", "/tensorflow.MasterService/*",
               "/tensorflow.eager.EagerService/*"]


def ingress_config(pki: Pki, workdir: pathlib.Path, worker: str) -> dict[str, Any]:
    """A worker's guard: mTLS; clients may run eager ops and sessions, workers may do
    what a master and its peers do; nobody else anything."""
    return {
        "listen": {"address": "127.0.0.1:0", "tls": {
            "cert": str(pki.server.cert_path), "key": str(pki.server.key_path),
            "client_ca": str(pki.ca.ca.cert_path)}},
        "upstreams": {worker: {"address": f"unix:{workdir / worker}.sock", "kind": "cluster"}},
        "cluster": {"addresses": [t.address for t in TASKS]},
        "policy": {"rules": [
            {"name": "tf-clients", "principals": {"spiffe": [CLIENT, CLIENT2]},
             "methods": CLIENT_METHODS},
            {"name": "tf-workers", "principals": {"spiffe": ["spiffe://tfgate.test/cluster/worker*"]},
             "methods": WORKER_METHODS},
        ]},
        "audit": {"output": str(workdir / f"audit-{worker}.jsonl")},
    }


def client_ingress_config(pki: Pki, workdir: pathlib.Path) -> dict[str, Any]:
    """The client's own TF server (TF clients run one, on every interface): only
    workers may pull the client's tensors from it, nothing else."""
    config = ingress_config(pki, workdir, "client0")
    config["policy"]["rules"] = [{
        "name": "workers-pull", "principals": {"spiffe": ["spiffe://tfgate.test/cluster/worker*"]},
        "methods": ["RecvTensor"]}]
    return config


def egress_config(pki: Pki, workdir: pathlib.Path, name: str, identity: str,
                  upstream: str) -> dict[str, Any]:
    cert = pki.ca.client(f"egress-{name}", spiffe_id=identity)
    return {
        "listen": {"address": f"unix:{workdir / ('egress-' + name)}.sock", "plaintext": True,
                   "local_identity": identity},
        "upstreams": {"remote": {"address": upstream, "kind": "cluster", "tls": {
            "ca": str(pki.ca.ca.cert_path), "cert": str(cert.cert_path),
            "key": str(cert.key_path)}}},
        "cluster": {"addresses": ["**"],
                    "tensors": {"max_tensor_bytes": 2**40, "max_request_bytes": 2**40}},
        "policy": {"rules": [{"name": "local", "principals": {"spiffe": [identity]},
                              "methods": ALL_CLUSTER,
                              "ops": {"lift": sorted(DEFAULT_DENYLIST)}}]},
        "audit": {"output": str(workdir / f"audit-egress-{name}.jsonl")},
    }


@dataclass
class Guarded:
    workdir: pathlib.Path
    pki: Pki
    cluster: Cluster
    ingress: dict[str, RunningServer]
    servers: list[RunningServer] = field(default_factory=list)

    def serve(self, config: dict[str, Any]) -> RunningServer:
        server = RunningServer(validate_config(config)).start()
        self.servers.append(server)
        return server

    def egress(self, name: str, identity: str, worker: str) -> str:
        """A new egress for `identity` towards `worker`'s ingress; its socket route."""
        config = egress_config(self.pki, self.workdir, name, identity,
                               self.ingress[worker].address)
        return self.serve(config).address

    def audit(self, worker: str) -> list[dict[str, Any]]:
        path = self.workdir / f"audit-{worker}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def refusals(self, worker: str, since: int) -> list[dict[str, Any]]:
        return [e for e in self.audit(worker)[since:] if e["decision"] == "deny"]


def _skip_without_cluster() -> None:
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Guarded]:
    _skip_without_cluster()
    workdir = tmp_path_factory.mktemp("guarded")
    (workdir / "secret.txt").write_text(SECRET)
    g = Guarded(workdir, pki, Cluster(workdir), {})
    try:
        for worker in WORKERS:
            g.ingress[worker.name] = g.serve(ingress_config(pki, workdir, worker.name))
        g.ingress["client0"] = g.serve(client_ingress_config(pki, workdir))
        routes: dict[tuple[str, str], str | None] = {}
        for worker in WORKERS:
            routes[("client0", worker.name)] = g.egress(f"client0-{worker.name}", CLIENT,
                                                        worker.name)
            routes[(worker.name, "client0")] = g.egress(f"{worker.name}-client0",
                                                        WORKER_ID[worker.name], "client0")
            for peer in WORKERS:
                if peer != worker:
                    routes[(worker.name, peer.name)] = g.egress(
                        f"{worker.name}-{peer.name}", WORKER_ID[worker.name], peer.name)
        g.cluster.routes = routes
        with g.cluster:
            connected = g.cluster.client.run("connect")
            assert connected["ok"], connected
            yield g
    finally:
        for server in g.servers:
            server.stop(0)


def run(g: Guarded, action: str, **args: Any) -> dict[str, Any]:
    return g.cluster.client.run(action, **args)


class TestAllowed:
    def test_connect_went_through_both_guards(self, guarded: Guarded) -> None:
        """Each worker's ingress saw the client's GetStatus and CreateContext under the
        client's certificate identity (presented by its egress), naming allowlisted
        addresses only."""
        for worker in WORKERS:
            seen = {(e["method"].rsplit("/", 1)[1], e["principal"], e["reason"])
                    for e in guarded.audit(worker.name)}
            assert {("GetStatus", CLIENT, "allowed"), ("CreateContext", CLIENT, "allowed")} <= seen

    def test_eager_remote_ops(self, guarded: Guarded) -> None:
        assert run(guarded, "eager_op") == {"ok": True, "value": [3.0, 5.0, 7.0]}

    def test_tf_function(self, guarded: Guarded) -> None:
        """A tf.function registered on both workers, then called by name on one."""
        assert run(guarded, "remote_function") == {"ok": True, "value": 14.0}
        assert run(guarded, "remote_function_local_input") == {"ok": True, "value": 21.0}

    def test_tf1_session_graph(self, guarded: Guarded) -> None:
        """A graph split over both workers: the master (worker0) registers and runs
        worker1's part through worker0's egress and worker1's ingress."""
        before = len(guarded.audit("worker1"))
        assert run(guarded, "session") == {"ok": True, "value": 42.5}
        assert run(guarded, "session_function") == {"ok": True, "value": [12.0, 12.0]}
        by_worker0 = [e for e in guarded.audit("worker1")[before:]
                      if e["principal"] == WORKER_ID["worker0"]]
        methods = {e["method"].rsplit("/", 1)[1] for e in by_worker0}
        assert {"CreateWorkerSession", "RegisterGraph", "RunGraph"} <= methods
        assert all(e["decision"] == "allow" for e in by_worker0)
        registered = [e for e in by_worker0 if e["method"].endswith("/RegisterGraph")]
        assert all("_Recv" in e["ops"] or "_Send" in e["ops"] for e in registered)

    def test_the_stream_stays_open(self, guarded: Guarded) -> None:
        """The client's StreamingEnqueue lives across actions: it holds a call slot at
        the ingress and has not ended (no audit event yet)."""
        run(guarded, "eager_op")
        state = guarded.ingress["worker0"].state
        _, in_flight = state.shared.limits.snapshot()
        assert in_flight.get(CLIENT, 0) >= 1
        ended = [e for e in guarded.audit("worker0") if e["method"].endswith("/StreamingEnqueue")
                 and e["principal"] == CLIENT]
        assert ended == []


class TestRefused:
    """What a worker must never run for a remote caller; refused at its ingress, with
    the op named, and the worker's file system untouched."""

    @pytest.mark.parametrize("action", ["read_file", "function_read_file", "nested_read_file",
                                        "session_read_file", "session_nested_read_file"])
    def test_read_file(self, guarded: Guarded, action: str) -> None:
        before = len(guarded.audit("worker0"))
        result = run(guarded, action, path=str(guarded.workdir / "secret.txt"))
        assert not result["ok"] and SECRET not in json.dumps(result), result
        refused = _wait_for_refusal(guarded, "worker0", before)
        assert refused["reason"] == "op-not-allowed" and '"ReadFile"' in refused["detail"]
        assert refused["principal"] == CLIENT

    def test_write_file(self, guarded: Guarded) -> None:
        target = guarded.workdir / "written.txt"
        before = len(guarded.audit("worker0"))
        result = run(guarded, "write_file", path=str(target), contents="pwned")
        assert not result["ok"], result
        assert not target.exists()
        assert '"WriteFile"' in _wait_for_refusal(guarded, "worker0", before)["detail"]

    def test_python_callbacks(self, guarded: Guarded) -> None:
        """tf.py_function runs its Python in the client (so it still answers), but TF
        also registers the function holding EagerPyFunc on every worker, where a later
        call could run it: that registration is refused at both ingresses. EagerPyFunc
        sent as an op would run in the worker's Python: refused."""
        before = {w.name: len(guarded.audit(w.name)) for w in WORKERS}
        assert run(guarded, "py_function") == {"ok": True, "value": 4.0}
        for worker in WORKERS:
            refused = _wait_for_refusal(guarded, worker.name, before[worker.name])
            assert '"EagerPyFunc"' in refused["detail"] and "register_function" in refused["detail"]
        before0 = len(guarded.audit("worker0"))
        result = run(guarded, "raw_py_func", token="pyfunc_0")
        assert not result["ok"], result
        refused = _wait_for_refusal(guarded, "worker0", before0)
        assert 'op "EagerPyFunc" at queue[0].operation' in refused["detail"]

    def test_an_expanding_constant(self, guarded: Guarded) -> None:
        """tf.constant(1.0, shape=[10**8]) in a TF1 graph: TF sends one value and the
        shape, the worker would build 400 MB from it; refused before it is forwarded."""
        assert run(guarded, "session_big_constant", elements=4) == {"ok": True, "value": 4.0}
        before = len(guarded.audit("worker0"))
        result = run(guarded, "session_big_constant", elements=10**8)
        assert not result["ok"] and result["error"] == "ResourceExhaustedError", result
        refused = _wait_for_refusal(guarded, "worker0", before)
        assert refused["reason"] == "limit-exceeded"
        assert "400000000 bytes decoded" in refused["detail"]

    def test_the_client_works_again_after_refusals(self, guarded: Guarded) -> None:
        """A refusal ends the client's stream; TF opens a new one for the next ops."""
        assert run(guarded, "eager_op") == {"ok": True, "value": [3.0, 5.0, 7.0]}
        assert run(guarded, "session") == {"ok": True, "value": 42.5}


def _wait_for_refusal(g: Guarded, worker: str, since: int) -> dict[str, Any]:
    """The first refusal audited at `worker` since event `since` (a stream's event is
    written when the stream ends, just after the client hears of it)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        refused = g.refusals(worker, since)
        if refused:
            return refused[0]
        time.sleep(0.1)
    raise AssertionError(f"no refusal audited at {worker}: {g.audit(worker)[since:]}")


class TestPeers:
    def test_a_peer_without_an_allowed_certificate(self, guarded: Guarded) -> None:
        """A TF client whose egress holds a valid certificate no rule names gets nothing,
        and a caller without a certificate does not get past the TLS handshake."""
        routes = {w.name: guarded.egress(f"intruder-{w.name}", INTRUDER, w.name) for w in WORKERS}
        intruder = guarded.cluster.add_client("intruder", routes)
        before = len(guarded.audit("worker0"))
        result = intruder.run("connect")
        assert not result["ok"], result
        refused = _wait_for_refusal(guarded, "worker0", before)
        assert (refused["principal"], refused["reason"]) == (INTRUDER, "no-rule-for-principal")
        creds = grpc.ssl_channel_credentials(guarded.pki.ca.ca.cert_pem)
        with grpc.secure_channel(guarded.ingress["worker0"].address, creds) as channel:
            with pytest.raises(grpc.RpcError) as info:
                channel.unary_unary("/tensorflow.WorkerService/GetStatus")(b"", timeout=10)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE

    def test_a_context_naming_an_address_outside_the_allowlist(self, guarded: Guarded) -> None:
        """An allowed client that advertises itself at an address not in
        cluster.addresses (the worker would dial it) cannot create its context."""
        routes = {w.name: guarded.egress(f"client2-{w.name}", CLIENT2, w.name) for w in WORKERS}
        client2 = guarded.cluster.add_client("client2", routes)
        before = len(guarded.audit("worker0"))
        result = client2.run("connect", client_address="127.0.0.5:2224")
        assert not result["ok"], result
        refused = _wait_for_refusal(guarded, "worker0", before)
        assert refused["reason"] == "address-not-allowed"
        assert '"127.0.0.5:2224"' in refused["detail"]

    def test_a_second_principal_cannot_use_the_first_ones_context(self, guarded: Guarded) -> None:
        """client2, with its own valid certificate, names client0's context (its id read
        from the guard's own table here, as a stolen id would be): refused, whether it
        enqueues ops into it or re-creates it; client0 carries on."""
        table = guarded.ingress["worker0"].state.shared.handles
        (context,) = {int(v) for kind, v in table.keys_of(CLIENT) if kind == "context"}
        cert = guarded.pki.ca.client("client2-raw", spiffe_id=CLIENT2)
        creds = grpc.ssl_channel_credentials(guarded.pki.ca.ca.cert_pem, cert.key_pem,
                                             cert.cert_pem)
        with grpc.secure_channel(guarded.ingress["worker0"].address, creds) as channel:
            for method, request in (
                    ("Enqueue", rq.enqueue(context, rq.op_item("Mul"))),
                    ("CreateContext", rq.create_context(context)),
                    ("CloseContext", rq.f64(1, context))):
                call = channel.unary_unary(f"/tensorflow.eager.EagerService/{method}")
                with pytest.raises(grpc.RpcError) as info:
                    call(request, timeout=10)
                assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED, method
                assert "not created through tfgate by this caller" in info.value.details()
        assert run(guarded, "eager_op") == {"ok": True, "value": [3.0, 5.0, 7.0]}


def test_connect_back_through_the_client_ingress(guarded: Guarded) -> None:
    """By default no worker calls the client. With TF_EAGER_REMOTE_USE_SEND_TENSOR_RPC=0
    worker0 pulls the client's input with RecvTensor, through its egress and the client's
    ingress, as a worker identity. Runs last: it replaces the module's client."""
    assert guarded.audit("client0") == []
    guarded.cluster.restart_client({"TF_EAGER_REMOTE_USE_SEND_TENSOR_RPC": "0"})
    assert run(guarded, "connect")["ok"]
    assert run(guarded, "remote_function_local_input") == {"ok": True, "value": 21.0}
    pulls = [(e["method"].rsplit("/", 1)[1], e["principal"], e["reason"])
             for e in guarded.audit("client0")]
    assert pulls and set(pulls) == {("RecvTensor", WORKER_ID["worker0"], "allowed")}
