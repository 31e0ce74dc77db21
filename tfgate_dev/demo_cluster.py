"""`tfgate demo --cluster`: an unmodified TF client and `tf.distribute.Server` through tfgate.

In a temporary directory: a throwaway PKI, then a TF 2.21 worker and a TF client, each in
its own network namespace (tests/tfcluster.py, so neither TF server is reachable from
this machine's network), and two `tfgate serve` processes:

    TF client ──plaintext, unix socket──▶ egress tfgate ══mTLS══▶ ingress tfgate ──▶ TF worker

The egress calls its local caller by a fixed identity (`listen.local_identity`) and
presents the client host's certificate; the worker's ingress judges every request:
who may call which method, every op in every graph, function and eager operation,
the cluster addresses, and who owns each context. Each step checks its outcome (the
values TF computed, or the refusal and the audit line saying why). Exit status as for
the serving demo: 0 when every step behaved as described, 1 when one did not, 2 when
TensorFlow or network namespaces are missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import yaml

from tfgate_dev.demo import BAD, NO, REPO, YES, DemoError, _stop, say
from tfgate_dev.devpki import DevPKI

CLIENT = "spiffe://demo.tfgate/train/client"
STRANGER = "spiffe://demo.tfgate/elsewhere/job"
SECRET = "the worker's private key\n"
EAGER = "/tensorflow.eager.EagerService/"
CLIENT_METHODS = ["GetStatus", "CreateContext", "Enqueue", "StreamingEnqueue", "WaitQueueDone",
                  "RunComponentFunction", "KeepAlive", "CloseContext", "RecvTensor"]


def _harness() -> Any:
    """tests/tfcluster.py, from the source checkout the demo runs in."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests import tfcluster

    return tfcluster


def ingress_config(root: pathlib.Path, worker_inbox: pathlib.Path) -> dict[str, Any]:
    return {
        "listen": {"address": "127.0.0.1:0", "tls": {
            "cert": "pki/server.pem", "key": "pki/server.key", "client_ca": "pki/ca.pem"}},
        "upstreams": {"worker0": {"address": f"unix:{worker_inbox}", "kind": "cluster"}},
        "cluster": {"addresses": ["127.0.0.1:2222", "127.0.0.1:2224"]},
        "policy": {"rules": [{"name": "trainer", "principals": {"spiffe": [CLIENT]},
                              "methods": CLIENT_METHODS}]},
        "audit": {"output": str(root / "audit-ingress.jsonl")},
        "server": {"grace_s": 1},
    }


def egress_config(root: pathlib.Path, ingress: str) -> dict[str, Any]:
    return {
        "listen": {"address": f"unix:{root / 'egress.sock'}", "plaintext": True,
                   "local_identity": CLIENT},
        "upstreams": {"worker0": {"address": ingress, "kind": "cluster", "tls": {
            "ca": "pki/ca.pem", "cert": "pki/client.pem", "key": "pki/client.key"}}},
        "cluster": {"addresses": ["127.0.0.1:2222", "127.0.0.1:2224"]},
        "policy": {"rules": [{"name": "this-host", "principals": {"spiffe": [CLIENT]},
                              "methods": CLIENT_METHODS}]},
        "audit": {"output": str(root / "audit-egress.jsonl")},
        "server": {"grace_s": 1},
    }


def serve(root: pathlib.Path, name: str, config: dict[str, Any],
          stack: contextlib.ExitStack) -> str:
    """`tfgate serve` on `config`; its address once it serves."""
    path, ready, log = root / f"{name}.yaml", root / f"{name}.ready", root / f"{name}.log"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "serve", "--config",
                                 str(path), "--ready-file", str(ready)], stdout=out,
                                stderr=subprocess.STDOUT, cwd=root, env=env)
    stack.callback(_stop, proc)
    deadline = time.monotonic() + 30
    while not (ready.exists() and ready.read_text().endswith("\n")):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise DemoError(f"tfgate {name} did not start; its log:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    return ready.read_text().strip()


@dataclass
class Step:
    title: str
    why: str
    call: Callable[[], str]    # what was answered; raises Refused when refused
    refused: str | None = None  # the audit reason a refusal must carry; None: allowed


class Refused(Exception):
    pass


AUDITS = ("ingress", "egress")


def audit(root: pathlib.Path, since: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """The audit events of both tfgates (each marked with which), after `since` events
    of each file."""
    events = []
    for name in AUDITS:
        path = root / f"audit-{name}.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        events += [dict(json.loads(line), tfgate=name)
                   for line in lines[(since or {}).get(name, 0):]]
    return events


def counts(root: pathlib.Path) -> dict[str, int]:
    return {name: sum(1 for e in audit(root) if e["tfgate"] == name) for name in AUDITS}


def steps(root: pathlib.Path, client: Any, ingress: str) -> list[Step]:
    secret = str(root / "secret.txt")

    def tf_action(action: str, expected: Any, **args: Any) -> Callable[[], str]:
        def call() -> str:
            answer = client.run(action, **args)
            if not answer["ok"]:
                raise Refused(f"{answer['error']}: {answer['message'][:220]}")
            if answer["value"] != expected:
                raise DemoError(f"unexpected result {answer['value']!r}")
            return f"{answer['value']}  (computed by the TF worker)"
        return call

    def connect() -> str:
        answer = client.run("connect")
        if not answer["ok"]:
            raise Refused(f"{answer['error']}: {answer['message'][:220]}")
        remote = [d for d in answer["value"] if d.startswith("/job:worker/")]
        if not remote:
            raise DemoError(f"no worker device in {answer['value']}")
        return f"the client sees {', '.join(remote)}"

    def read() -> str:
        answer = client.run("read_file", path=secret)
        if answer["ok"]:
            raise DemoError(f"FORWARDED: the worker read the file: {answer['value']!r}")
        if SECRET.strip() in json.dumps(answer):
            raise DemoError("the file's contents reached the client")
        raise Refused(f"{answer['error']}: {answer['message'][:220]}")

    def direct(who: str, requests: list[tuple[str, bytes]]) -> Callable[[], str]:
        def call() -> str:
            pki = root / "pki"
            creds = grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes(),
                                                 (pki / f"{who}.key").read_bytes(),
                                                 (pki / f"{who}.pem").read_bytes())
            with grpc.secure_channel(ingress, creds) as channel:
                try:
                    for method, request in requests:
                        channel.unary_unary(method)(request, timeout=10)
                except grpc.RpcError as err:
                    raise Refused(f"{err.code().name}: {err.details()}") from None
            return "answered"
        return call

    from proxy.pb import distributed_eager_pb2 as eager

    create = eager.CreateContextRequest(context_id=77).SerializeToString()
    read_op = eager.EnqueueRequest(context_id=77)
    read_op.queue.add().operation.name = "ReadFile"
    return [
        Step("The TF client connects to the worker (experimental_connect_to_cluster)",
             "through its egress (no TLS in TF) and the worker's ingress (mTLS, rule trainer)",
             connect),
        Step("The client runs an eager op on the worker: [1, 2, 3] * 2 + 1",
             "Mul and AddV2 are ordinary ops; each StreamingEnqueue message is inspected",
             tf_action("eager_op", [3.0, 5.0, 7.0])),
        Step("The client calls a tf.function on the worker: sum of squares of [1, 2, 3]",
             "registered in the client's context, then called by name: its own function",
             tf_action("remote_function", 14.0)),
        Step("The client reads a file on the worker (tf.io.read_file)",
             "ReadFile is on the default denylist (file-io), wherever it appears",
             read, refused="op-not-allowed"),
        Step("A process with the client's certificate skips the egress and sends ReadFile "
             "straight to the worker's ingress", "the worker's own tfgate judges every op",
             direct("client", [(EAGER + "CreateContext", create),
                               (EAGER + "Enqueue", read_op.SerializeToString())]),
             refused="op-not-allowed"),
        Step(f"A job with a valid certificate ({STRANGER}) calls the worker",
             "no rule names it: it gets nothing, not even GetStatus",
             direct("stranger", [("/tensorflow.WorkerService/GetStatus", b"")]),
             refused="no-rule-for-principal"),
    ]


def run_step(n: int, total: int, step: Step, root: pathlib.Path) -> bool:
    say(f"[{n}/{total}] {step.title}")
    say(f"      why: {step.why}")
    before = counts(root)
    refused, broken = None, False
    try:
        text = step.call()
    except Refused as err:
        refused, text = True, str(err)
    except DemoError as err:
        broken, text = True, str(err)
    new = audit(root, before)
    deadline = time.monotonic() + 10
    while step.refused and refused and not any(e["reason"] == step.refused for e in new):
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)  # a stream's event is written when it ends, just after the refusal
        new = audit(root, before)
    if broken:
        ok, line = False, text
    elif step.refused is None:
        ok, line = not refused, f"{YES} ALLOWED  {text}" if not refused else f"REFUSED  {text}"
    else:
        by = next((e for e in new if e["reason"] == step.refused), None)
        ok = bool(refused) and by is not None
        where = f"; refused by the {by['tfgate']} tfgate ({by['reason']})" if by else ""
        line = f"{NO} REFUSED  {text}{where}" if refused else f"ALLOWED  {text}"
    if not ok:
        want = step.refused or "ALLOWED"
        line = f"{BAD} FAIL: expected {want}, got: {line}"
    say(f"      {line}")
    return ok


def show_audit(root: pathlib.Path) -> None:
    say("\nAudit (one JSON event per call; the ingress's, then the egress's):")
    for e in audit(root):
        if e["reason"] == "allowed" and not e.get("ops") and e["method"].endswith("/Enqueue"):
            continue  # TF's asynchronous handle releases
        mark = YES if e["decision"] == "allow" else NO
        ops = " ops=" + ",".join(e["ops"][:4]) if e.get("ops") else ""
        say(f"  {mark} {e['tfgate']:<7} {e['decision']:<5} {e['reason']:<22} "
            f"{e['method'].rsplit('/', 1)[-1]:<17} {e['principal']}{ops}")


def run_cluster_demo() -> int:
    harness = _harness()
    unavailable = harness.namespaces_unavailable()
    if unavailable:
        say(f"tfgate demo --cluster: needs network namespaces so that no TF server is "
            f"reachable from this machine's network: {unavailable}")
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with contextlib.ExitStack() as stack:
        root = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix="tfgate-cluster-")))
        say(f"Setting up in {root}: a throwaway CA and certificates")
        pki = DevPKI.create(root / "pki")
        pki.server()
        pki.client("client", spiffe_id=CLIENT)
        pki.client("stranger", spiffe_id=STRANGER)
        (root / "secret.txt").write_text(SECRET)
        cluster_dir = root / "tf"
        cluster = harness.Cluster(cluster_dir, routes={
            ("client0", "worker0"): f"unix:{root / 'egress.sock'}",
            ("worker0", "client0"): None}, workers=harness.WORKERS[:1])
        ingress = serve(root, "ingress", ingress_config(root, cluster.inbox("worker0")), stack)
        serve(root, "egress", egress_config(root, ingress), stack)
        say(f"tfgate ingress on {ingress} (mTLS) -> the worker; egress on "
            f"{root / 'egress.sock'} -> the ingress")
        say("Starting a TF worker and a TF client, each in its own network namespace ...\n")
        stack.enter_context(cluster)
        plan = steps(root, cluster.client, ingress)
        results = [run_step(i, len(plan), s, root) for i, s in enumerate(plan, 1)]
        show_audit(root)
        failed = results.count(False)
        say(f"\n{YES} every step behaved as described" if not failed else
            f"\n{BAD} {failed} step(s) did NOT behave as described (see {BAD} above)")
        return 1 if failed else 0
