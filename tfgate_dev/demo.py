"""`tfgate demo`: tfgate in front of a real TensorFlow model, allowed and refused calls.

In a temporary directory it makes a throwaway PKI and JWT signing key, starts the
TF-backed ModelServer stand-in (`tfgate_dev.testbackend`, loopback only, recording every
request it receives) and tfgate itself as a subprocess (`tfgate serve`) with the policy in
`DEMO_CONFIG`. Then each step makes one call with the real tensorflow-serving-api client
(or, for the REST front, httpx over mTLS) and checks that the outcome is the one it
announces, including, for refusals, that the model server never saw the request. Exit
status: 0 when every step behaved as described, 1 otherwise, 2 when something the demo needs is missing.

This module is the demo *client*: it imports TensorFlow. The proxy process never does.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import json
import logging
import os
import pathlib
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from tfgate_dev.devpki import ISSUER_FILE, DevPKI, SigningKey, mint_claims, write_jwks
from tfgate_dev.tokens import mint_token

REPO = pathlib.Path(__file__).resolve().parents[1]
ISSUER, AUDIENCE = "https://issuer.demo.tfgate", "tfgate-demo"
TEAM_A = "spiffe://demo.tfgate/team-a/alice"
BIG = 1_000_000_000  # elements in the expanding tensor: 4 GB of float32 once decoded
OK_CODES = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT)

DEMO_CONFIG = """\
# The demo's policy (written by `tfgate demo`; paths are relative to this file).
listen:
  address: 127.0.0.1:0               # a free loopback port
  tls: {{cert: pki/server.pem, key: pki/server.key, client_ca: pki/ca.pem}}  # mTLS
rest:                                # ModelServer's HTTP/JSON API, same policy
  address: 127.0.0.1:{rest_port}
  tls: {{cert: pki/server.pem, key: pki/server.key, client_ca: pki/ca.pem}}  # mTLS
  upstream: native                   # to the model server's own REST port
upstreams:
  serving: {{address: "{backend}", rest_address: "http://{backend_rest}"}}  # loopback only
authn:
  jwt:
    issuers:
      - issuer: {issuer}
        audiences: [{audience}]
        algorithms: [ES256]
        jwks_file: pki/jwks.json
identity: {{forward_metadata_key: x-tfgate-principal}}
policy:
  rules:                             # default deny: anything not granted here is refused
    - name: team-a-predict
      principals: {{spiffe: ["spiffe://demo.tfgate/team-a/*"]}}
      methods: [Predict, GetModelMetadata]
      models: [half_plus_two]
      signatures: [serving_default]
    - name: team-b-other-model
      principals: {{spiffe: ["spiffe://demo.tfgate/team-b/*"]}}
      methods: [Predict]
      models: [other_model]
    - name: batch-token
      principals: {{iss: ["{issuer}"], scopes: ["predict:other_model"]}}
      require: [token]
      methods: [Predict]
      models: [other_model]
    - name: ops-admin
      principals: {{spiffe: ["spiffe://demo.tfgate/ops/*"]}}
      methods: [HandleReloadConfigRequest, GetModelStatus]
      models: ["*"]
audit: {{output: "{audit}"}}
server: {{grace_s: 1}}
"""


class DemoError(Exception):
    """Something the demo needs did not work; the message says what."""


class HttpRefused(Exception):
    """A REST call answered with an error status (the REST steps' refusal)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


_UTF8 = (sys.stdout.encoding or "").lower().replace("-", "") == "utf8"
YES, NO, BAD = ("✔", "✘", "‼") if _UTF8 else ("+", "x", "!!")  # ALLOWED, REFUSED, FAIL


def say(text: str = "") -> None:
    print(text, flush=True)


# -- setting up ------------------------------------------------------------------------

def _missing() -> str | None:
    needs = {"tensorflow": "tensorflow", "tensorflow_serving": "tensorflow-serving-api"}
    return next((pkg for mod, pkg in needs.items() if importlib.util.find_spec(mod) is None), None)


def make_pki(root: pathlib.Path) -> None:
    """CA, server cert, client certs for alice (team A), bob (team B), ops and a batch job
    (CN only), a signing key with its JWKS, a batch-job token for other_model, and a token
    for alice that expired an hour ago."""
    pki = DevPKI.create(root / "pki")
    pki.server()
    pki.client("alice", spiffe_id=TEAM_A)
    pki.client("bob", spiffe_id="spiffe://demo.tfgate/team-b/bob")
    pki.client("ops", spiffe_id="spiffe://demo.tfgate/ops/admin")
    pki.client("batch-job")
    key = SigningKey.generate("demo-1")
    write_jwks(root / "pki" / "jwks.json", [key])
    signing = root / "pki" / "signing.key"  # as certs/make-dev-pki --jwt-issuer writes it
    signing.touch(mode=0o600)
    signing.write_bytes(key.private_pem())
    (root / "pki" / ISSUER_FILE).write_text(ISSUER + "\n")
    token = mint_token(directory=root / "pki", subject="batch-job", audiences=[AUDIENCE],
                       scopes=["predict:other_model"], ttl=3600)  # as `tfgate token mint`
    (root / "token.jwt").write_text(token + "\n")
    stale = mint_claims(issuer=ISSUER, audience=AUDIENCE, subject="alice",
                        now=time.time() - 7200, ttl=3600, scope="predict")
    (root / "expired.jwt").write_text(key.token(stale) + "\n")


def start_proxy(root: pathlib.Path, stack: contextlib.ExitStack) -> tuple[str, subprocess.Popen]:
    """Run `tfgate serve` as a subprocess; return its address once it is serving."""
    ready, log = root / "ready", root / "tfgate.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "serve", "--config", str(root / "tfgate.yaml"),
             "--ready-file", str(ready)], stdout=out, stderr=subprocess.STDOUT, cwd=root, env=env)
    stack.callback(_stop, proc)
    deadline = time.monotonic() + 30
    while not (ready.exists() and ready.read_text().endswith("\n")):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise DemoError(f"tfgate did not start; its log:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    return ready.read_text().strip(), proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()  # does nothing if it has already exited
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the calls -------------------------------------------------------------------------

class Client:
    """The real tensorflow-serving-api client, as different callers."""

    def __init__(self, root: pathlib.Path, address: str) -> None:
        from tensorflow_serving.apis import (
            model_management_pb2,
            model_service_pb2_grpc,
            predict_pb2,
            prediction_service_pb2_grpc,
        )
        self.pb = predict_pb2
        self.mm = model_management_pb2
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub
        self.models = model_service_pb2_grpc.ModelServiceStub
        self.root, self.address = root, address
        self.rest_address = ""
        self.token = (root / "token.jwt").read_text().strip()
        self.expired = (root / "expired.jwt").read_text().strip()

    def channel(self, who: str | None) -> grpc.Channel:
        pki = self.root / "pki"
        read = (lambda name: (pki / name).read_bytes() if who else None)  # noqa: E731
        creds = grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes(),
                                             read(f"{who}.key"), read(f"{who}.pem"))
        return grpc.secure_channel(self.address, creds)

    def request(self, model: str = "half_plus_two", values: tuple[float, ...] = (1, 2, 3),
                shape: tuple[int, ...] | None = None, signature: str = "") -> Any:
        request = self.pb.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = model, signature
        tensor = request.inputs["x"]
        tensor.dtype = 1  # DT_FLOAT
        for size in shape or (len(values),):
            tensor.tensor_shape.dim.add(size=size)
        tensor.float_val.extend(values)
        return request

    def predict(self, who: str | None, request: Any, token: bool | str = False) -> Any:
        """`token`: True for the batch job's token, or the token itself."""
        bearer = self.token if token is True else token
        metadata = [("authorization", f"Bearer {bearer}")] if bearer else []
        return self.prediction(self.channel(who)).Predict(request, metadata=metadata, timeout=10)

    def rest(self, who: str, path: str, body: bytes, headers: dict[str, str] | None = None
             ) -> Any:
        """POST to tfgate's REST front with `who`'s certificate; the JSON answer, or
        HttpRefused with the status and ModelServer-style error message."""
        import ssl

        import httpx

        pki = self.root / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        context.load_cert_chain(str(pki / f"{who}.pem"), str(pki / f"{who}.key"))
        with httpx.Client(verify=context, timeout=10) as c:
            r = c.post(f"https://localhost:{self.rest_address.rsplit(':', 1)[1]}{path}",
                       content=body, headers={"Content-Type": "application/json",
                                              **(headers or {})})
        if r.status_code != 200:
            raise HttpRefused(r.status_code, r.json().get("error", r.text))
        return r.json()


def outputs(response: Any) -> list[float]:
    import tensorflow as tf

    return [round(float(v), 4) for v in tf.make_ndarray(response.outputs["y"])]


@dataclass
class Step:
    title: str
    why: str
    call: Callable[[], str]  # returns what was answered; raises grpc.RpcError if refused
    refuse_with: tuple[grpc.StatusCode | str, ...] = ()  # empty: must be allowed; "HTTP 413"


def steps(client: Client, backend: Any) -> list[Step]:
    def allowed() -> str:
        y = outputs(client.predict("alice", client.request()))
        if y != [3.5, 4.0, 4.5]:
            raise DemoError(f"unexpected model output {y}")
        return f"x = [1, 2, 3] -> y = {y}  (computed by TensorFlow: 0.5*x + 3, version 2)"

    def reload() -> str:
        request = client.mm.ReloadConfigRequest()
        request.config.model_config_list.config.add(name="evil", base_path="/tmp/evil")
        client.models(client.channel("alice")).HandleReloadConfigRequest(request, timeout=10)
        return "the model server was asked to reload its config"

    def rest_allowed() -> str:
        answer = client.rest("alice", "/v1/models/half_plus_two:predict",
                             b'{"instances": [1, 2, 3]}')
        if answer != {"predictions": [3.5, 4.0, 4.5]}:
            raise DemoError(f"unexpected REST answer {answer}")
        return f'POST :predict {{"instances": [1, 2, 3]}} -> {json.dumps(answer)}'

    bomb = gzip.compress(b" " * (64 << 20), 9)  # 64 MiB of spaces, ~64 KiB on the wire

    def rest_bomb() -> str:
        return str(client.rest("alice", "/v1/models/half_plus_two:predict", bomb,
                               {"Content-Encoding": "gzip"}))

    denied = (grpc.StatusCode.PERMISSION_DENIED,)
    big = client.request(values=(1.0,), shape=(BIG,))
    return [
        Step("Team A's service (mTLS cert spiffe://demo.tfgate/team-a/alice) calls Predict",
             "rule team-a-predict grants Predict on half_plus_two", allowed),
        Step("A caller without a client certificate calls Predict",
             "the listener requires mTLS: the TLS handshake fails, no gRPC call happens",
             lambda: str(client.predict(None, client.request())),
             (grpc.StatusCode.UNAVAILABLE,)),
        Step("A batch job with a valid token for other_model asks for half_plus_two",
             "its token scope predict:other_model grants other_model only",
             lambda: str(client.predict("batch-job", client.request(), token=True)), denied),
        Step("Team A's service sends its valid certificate with a token that expired an hour "
             "ago", "a token that fails verification fails the call, even where the "
             "certificate alone would pass; the audit still names the certificate",
             lambda: str(client.predict("alice", client.request(), token=client.expired)),
             (grpc.StatusCode.UNAUTHENTICATED,)),
        Step("Team A asks for signature times_three of half_plus_two",
             "team A is granted serving_default only",
             lambda: str(client.predict("alice", client.request(signature="times_three"))),
             denied),
        Step("Team A calls ModelService/HandleReloadConfigRequest (loads models from any path)",
             "admin methods must be named by a rule; only the ops identity has one", reload,
             denied),
        Step(f"Team A sends a {big.ByteSize()}-byte Predict declaring shape [{BIG}] with one "
             "float value", "ModelServer would expand it to 4 GB; tfgate must refuse it "
             "before forwarding", lambda: expanding_call(client, backend, big), OK_CODES),
        Step("Team A calls the REST API: POST /v1/models/half_plus_two:predict",
             "the REST front runs the same authentication and policy (rule team-a-predict)",
             rest_allowed),
        Step(f"Team A POSTs {len(bomb)} bytes of gzip that inflate to 64 MiB of JSON",
             "tfgate inflates under rest.max_body_bytes (16 MiB) and stops there",
             rest_bomb, ("HTTP 413",)),
    ]


def expanding_call(client: Client, backend: Any, request: Any) -> str:
    """If the request reaches the model server, stop the server at once (the step has
    failed anyway) rather than let it allocate 4 GB on this machine."""
    before = len(backend.records())
    stub = client.prediction(client.channel("alice"))
    future = stub.Predict.future(request, timeout=10)
    while not future.done():
        if len(backend.records()) > before:
            backend.process.kill()
            raise DemoError("FORWARDED: the model server received it (demo stopped the "
                            "server before it allocated 4 GB)")
        time.sleep(0.01)
    return f"answered: {future.result()}"


def run_step(n: int, total: int, step: Step, backend: Any) -> bool:
    say(f"[{n}/{total}] {step.title}")
    say(f"      why: {step.why}")
    before = len(backend.records())
    code, text, broken = None, "", False
    try:
        text = step.call()[:300]
    except grpc.RpcError as err:
        code, text = err.code(), f"{err.code().name}: {err.details()}"
    except HttpRefused as err:
        code, text = f"HTTP {err.status}", f"HTTP {err.status}: {err.message}"
    except DemoError as err:
        text, broken = str(err), True
    reached = len(backend.records()) - before
    if broken:
        ok, line = False, text
    elif step.refuse_with:
        ok = code in step.refuse_with and reached == 0
        seen = "the model server never saw it" if reached == 0 else "THE MODEL SERVER SAW IT"
        line = f"{NO} REFUSED  {text}; {seen}" if code is not None else f"ALLOWED  {text}"
    else:
        ok, line = code is None and reached == 1, f"{YES} ALLOWED  {text}"
    if not ok:
        want = "/".join(getattr(c, "name", str(c)) for c in step.refuse_with) or "ALLOWED"
        line = f"{BAD} FAIL: expected {want}, got: {line}"
    say(f"      {line}")
    return ok


# -- audit -----------------------------------------------------------------------------

def audit_lines(path: pathlib.Path, expected: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= expected or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.05)


def show_audit(path: pathlib.Path, expected: int) -> bool:
    events = audit_lines(path, expected)
    say(f"\nAudit log ({path.name}, one JSON event per call; the no-certificate attempt "
        "never became a call):")
    for e in events:
        mark = YES if e["decision"] == "allow" else NO
        say(f"  {mark} {e['decision']:<5} {e['reason']:<23} {e['method'].rsplit('/', 1)[-1]:<26}"
            f" {e['model'] or '-':<14} {e['principal']}")
    if events:
        say(f"  first event as written:\n  {json.dumps(events[0])}")
    if len(events) != expected:
        say(f"  {BAD} FAIL: expected {expected} audit events, found {len(events)}")
        return False
    expired = [e for e in events if e["reason"] == "token-expired"]
    if [e["principal"] for e in expired] != [TEAM_A]:
        say(f"  {BAD} FAIL: the expired-token call is not audited with alice's certificate "
            f"identity: {expired}")
        return False
    return True


# -- keep mode -------------------------------------------------------------------------

def show_commands(root: pathlib.Path, address: str, rest_address: str) -> None:
    py, q = sys.executable, shlex.quote
    tfgate = pathlib.Path(py).with_name("tfgate")
    tfgate_cmd = q(str(tfgate)) if tfgate.exists() else f"{q(py)} -m proxy.cli"
    client = f"{q(py)} {q(str(REPO / 'examples' / 'predict.py'))} --address {address} --ca pki/ca.pem"
    alice = f"{client} --cert pki/alice.pem --key pki/alice.key"
    curl = ("curl --cacert pki/ca.pem --cert pki/alice.pem --key pki/alice.key \\\n      "
            f"https://localhost:{rest_address.rsplit(':', 1)[1]}"
            """/v1/models/half_plus_two:predict -d '{"instances": [1, 2, 3]}'""")
    say(f"""
tfgate keeps running on {address} (config: {root / 'tfgate.yaml'}). In another terminal:

  cd {q(str(root))}
  # allowed: team A, serving_default of half_plus_two
  {alice} 1 2 3
  # refused: team A may not use signature times_three
  {alice} --signature times_three 1 2 3
  # refused before the model server: shape [{BIG}] declared with one value
  {alice} --shape {BIG} 1
  # allowed: team B on other_model; refused: team B on half_plus_two
  {client} --cert pki/bob.pem --key pki/bob.key --model other_model 5
  {client} --cert pki/bob.pem --key pki/bob.key 5
  # the batch job's token (scope predict:other_model) with its CN-only certificate
  {client} --cert pki/batch-job.pem --key pki/batch-job.key --token-file token.jwt --model other_model 5
  # refused UNAUTHENTICATED: team A's certificate with an expired token
  {alice} --token-file expired.jwt 1 2 3
  # mint a fresh batch-job token with the demo issuer's key (dev tooling)
  {tfgate_cmd} token mint --dir pki --sub batch-job --aud {AUDIENCE} \\
      --scope predict:other_model --ttl 3600 > token.jwt
  # the REST front: the same policy over HTTP/JSON (mTLS)
  {curl}
  # ask the policy without calling
  {tfgate_cmd} explain --config tfgate.yaml --method Predict --model half_plus_two \\
      --signature times_three --spiffe {TEAM_A}
  # watch decisions
  tail -f audit.jsonl

Press Ctrl-C to stop everything and delete {root}.""")


def wait_forever(proxy: subprocess.Popen) -> None:
    while proxy.poll() is None:
        time.sleep(0.5)
    say(f"{BAD} tfgate exited with status {proxy.returncode}; ending the demo")


# -- main ------------------------------------------------------------------------------

def run_demo(keep: bool, cluster: bool = False) -> int:
    """`cluster`: the distributed-TF demo instead (tfgate_dev/demo_cluster.py)."""
    missing = _missing()
    if missing:
        say(f"tfgate demo: the Python package {missing!r} is not installed (the demo's model "
            "server and client need it). Run `make setup` first (or `make demo`).")
        return 2
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if cluster:
            from tfgate_dev.demo_cluster import run_cluster_demo

            return run_cluster_demo()
        return _run(keep)
    except KeyboardInterrupt:
        say("\ninterrupted; stopped everything and removed the temporary files")
        return 130
    except DemoError as err:
        say(f"tfgate demo: {err}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # so that SIGTERM cleans up like Ctrl-C


def _run(keep: bool) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the steps say what happened
    from tfgate_dev.testbackend import start_backend
    from tfgate_dev.testbackend.rest_process import start_rest_backend

    with contextlib.ExitStack() as stack:
        root = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tfgate-demo-")))
        say(f"Setting up in {root}: a throwaway CA, certificates and a JWT signing key")
        make_pki(root)
        say("Starting the model server (real TensorFlow SavedModels, loopback only) ...")
        try:
            backend = stack.enter_context(start_rest_backend(record=True))
        except RuntimeError as err:
            raise DemoError(f"the model server did not start: {err}") from None
        rest_port = free_port()
        (root / "tfgate.yaml").write_text(DEMO_CONFIG.format(
            backend=backend.address, backend_rest=backend.rest_address, rest_port=rest_port,
            issuer=ISSUER, audience=AUDIENCE, audit=root / "audit.jsonl"))
        address, proxy = start_proxy(root, stack)
        say(f"tfgate is serving gRPC on {address} and REST on 127.0.0.1:{rest_port} -> "
            f"model server {backend.address} (REST {backend.rest_address})\n")
        client = Client(root, address)
        client.rest_address = f"127.0.0.1:{rest_port}"
        plan = steps(client, backend)
        results = [run_step(i, len(plan), s, backend) for i, s in enumerate(plan, 1)]
        results.append(show_audit(root / "audit.jsonl", expected=len(plan) - 1))
        failed = results.count(False)
        say(f"\n{YES} every step behaved as described" if not failed else
            f"\n{BAD} {failed} check(s) did NOT behave as described (see {BAD} above)")
        if keep:
            if backend.process.poll() is not None:  # stopped by step 6: start a fresh one
                stack.enter_context(start_backend(listen=backend.address))
            show_commands(root, address, client.rest_address)
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how --keep ends
                wait_forever(proxy)
            say(f"\nstopping tfgate and the model server; removing {root}")
        return 1 if failed else 0

