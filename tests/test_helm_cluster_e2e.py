"""The chart's cluster mode, served: the documented cluster install's rendered configs for
the chief pod's egress towards worker-0 (`egress-worker-0.yaml`) and for worker-0's
ingress (`tfgate.yaml`), with the pod's files, ports and addresses moved to this machine,
carry an unmodified TF client's eager ops to a real `tf.distribute.Server`:

    TF (chief pod) ──plaintext──▶ egress-worker-0 ══mTLS, the pod's certificate══▶
        worker-0's ingress ──▶ worker-0's tf.distribute.Server

The TF processes run in network namespaces of their own (tests/tfcluster.py): the client
reaches the worker only through the egress, and the worker admits calls only from its
ingress. What is moved, and why: the certificate files (the Secret's), the listeners (the
pod's ports may be taken here; the egress on a unix socket, where the harness routes the
client's dial), the upstream addresses (the headless Service's name and the pod's tfPort),
`cluster.addresses` (the harness's task addresses stand for the chart's loopback ones), the
audit (a file per process) and the admin listener (the kubelet's; not served here).
Everything else (policy, local_identity, TLS settings, limits) is as rendered."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from proxy.config import validate_config
from proxy.server import RunningServer
from tests.conftest import Pki
from tests.test_helm import check, documented_values, render
from tests.tfcluster import CLIENT, WORKERS, Cluster, namespaces_unavailable

pytestmark = pytest.mark.tf

VALUES = documented_values()["docs/kubernetes.md:cluster"]
IDENTITY = VALUES["cluster"]["identity"]
WORKER = WORKERS[0]
SECRET = "top secret\n"


def rendered_configs() -> dict[str, dict[str, Any]]:
    """The ConfigMap's configs by key: tfgate.yaml and egress-<task>.yaml."""
    found = check.configs_in(yaml.safe_dump_all(render(VALUES)))
    return {name.rpartition("/")[2] if "/" in name else "tfgate.yaml": doc
            for name, doc in found}


def on_this_machine(doc: dict[str, Any], files: dict[str, str], *, listen: str,
                    upstream: str, audit: pathlib.Path) -> dict[str, Any]:
    """The rendered config with its /etc/tfgate/ files taken from `files`, its listener at
    `listen`, its one upstream at `upstream`, the harness's task addresses as
    cluster.addresses, the audit in a file and no admin listener."""
    out = check.replaced(doc, lambda value: files[value.removeprefix(check.MOUNT)]
                         if value.startswith(check.MOUNT) else value)
    out["listen"]["address"] = listen
    ((_name, target),) = out["upstreams"].items()
    target["address"] = upstream
    out["cluster"]["addresses"] = [WORKER.address, CLIENT.address]
    out["audit"] = {"output": str(audit)}
    out.pop("admin", None)
    return out


def audit_of(path: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _skip_without_cluster() -> None:
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(f"the TF harness cannot run here: {reason}")
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("the TF harness cannot run here: TensorFlow is not installed")


class Served:
    def __init__(self, workdir: pathlib.Path, cluster: Cluster) -> None:
        self.workdir, self.cluster = workdir, cluster
        self.egress_audit = workdir / "audit-egress.jsonl"
        self.ingress_audit = workdir / "audit-ingress.jsonl"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Served]:
    _skip_without_cluster()
    configs = rendered_configs()
    egress, ingress = configs["egress-worker-0.yaml"], configs["tfgate.yaml"]
    # As rendered: the egress is TF's way to worker-0, plaintext on its ClusterSpec port,
    # for the pod's identity, to worker-0's ingress; the ingress guards tfPort.
    assert egress["listen"] == {"address": "127.0.0.1:2301", "plaintext": True,
                                "local_identity": IDENTITY}
    assert egress["upstreams"]["worker-0"]["address"] == (
        "demo-tfgate-worker-0.demo-tfgate-worker.ml.svc:8443")
    assert ingress["upstreams"]["tensorflow"]["address"] == "127.0.0.1:2222"
    workdir = tmp_path_factory.mktemp("helm-cluster")
    (workdir / "secret.txt").write_text(SECRET)
    pod_cert = pki.ca.client("trainer", spiffe_id=IDENTITY)  # the Secret's, as a client
    ca = str(pki.ca.ca.cert_path)
    cluster = Cluster(workdir, workers=(WORKER,))
    g = Served(workdir, cluster)
    servers: list[RunningServer] = []
    try:
        ingress_cfg = on_this_machine(ingress, {
            "tls/tls.crt": str(pki.server.cert_path), "tls/tls.key": str(pki.server.key_path),
            "client-ca/ca.crt": ca}, listen="127.0.0.1:0",
            upstream=f"unix:{cluster.inbox(WORKER.name)}", audit=g.ingress_audit)
        servers.append(RunningServer(validate_config(ingress_cfg)).start())
        egress_socket = workdir / "egress-worker-0.sock"
        egress_cfg = on_this_machine(egress, {
            "tls/tls.crt": str(pod_cert.cert_path), "tls/tls.key": str(pod_cert.key_path),
            "client-ca/ca.crt": ca}, listen=f"unix:{egress_socket}",
            upstream=servers[0].address, audit=g.egress_audit)
        servers.append(RunningServer(validate_config(egress_cfg)).start())
        cluster.routes = {(CLIENT.name, WORKER.name): f"unix:{egress_socket}",
                          (WORKER.name, CLIENT.name): None}  # TF 2.21 pushes: no call back
        with cluster:
            connected = cluster.client.run("connect")
            assert connected["ok"], connected
            yield g
    finally:
        for server in servers:
            server.stop(0)


def test_eager_ops_through_the_rendered_egress_and_ingress(served: Served) -> None:
    """The client's context and ops pass the egress as the pod's identity (its
    local_identity) and the ingress as the same identity (its certificate), and the
    worker computes them."""
    assert served.cluster.client.run("eager_op") == {"ok": True, "value": [3.0, 5.0, 7.0]}
    for path in (served.egress_audit, served.ingress_audit):
        seen = {(e["method"].rsplit("/", 1)[1], e["principal"], e["decision"])
                for e in audit_of(path)}
        assert {("GetStatus", IDENTITY, "allow"), ("CreateContext", IDENTITY, "allow")} <= seen


def test_a_refused_op_never_leaves_the_pod(served: Served) -> None:
    """ReadFile on the worker: the egress, running the ingress's rules, refuses it in the
    pod, naming the op; the ingress never judges it, and the client gets no file."""
    before = len(audit_of(served.ingress_audit))
    result = served.cluster.client.run("read_file", path=str(served.workdir / "secret.txt"))
    assert not result["ok"] and SECRET not in json.dumps(result), result
    deadline = time.monotonic() + 30
    refused: list[dict[str, Any]] = []
    while not refused and time.monotonic() < deadline:
        refused = [e for e in audit_of(served.egress_audit) if e["decision"] == "deny"]
        time.sleep(0.1)
    assert refused, audit_of(served.egress_audit)
    assert refused[0]["reason"] == "op-not-allowed" and '"ReadFile"' in refused[0]["detail"]
    assert refused[0]["principal"] == IDENTITY
    later = audit_of(served.ingress_audit)[before:]
    assert not [e for e in later if e["decision"] == "deny" or "ReadFile" in e.get("ops", [])]
    assert served.cluster.client.run("eager_op") == {"ok": True, "value": [3.0, 5.0, 7.0]}
