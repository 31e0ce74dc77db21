"""Every config in examples/ is valid as shipped, and the ModelServer ones work end to end.

The examples name files relative to themselves (`../certs/out/...`), as written by
`certs/make-dev-pki`. Here they are copied to a temporary `examples/` next to a
`certs/out/` made by the same generator, then checked like `tfgate check` does.
"""

from __future__ import annotations

import argparse
import contextlib
import pathlib
import shutil

import grpc
import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from proxy import cli
from proxy.config import load_config, validate_config
from proxy.server import RunningServer
from tfgate_dev.devpki import SigningKey, mint_claims
from tfgate_dev.devpki import main as make_dev_pki

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
CONFIGS = sorted(EXAMPLES.glob("*.yaml"))
TEAM_A = "spiffe://example.org/ns/team-a/sa/scorer"
TEAM_B = "spiffe://example.org/ns/team-b/sa/recommender"
ISSUER = "https://auth.example.org"
TRAIN = "spiffe://example.org/ns/train/sa"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A copy of examples/ beside certs/out/ holding every file the examples name."""
    root = tmp_path_factory.mktemp("examples-tree")
    shutil.copytree(EXAMPLES, root / "examples")
    assert make_dev_pki([str(root / "certs" / "out"), "--client", "tfgate-upstream",
                         "--client", f"team-a={TEAM_A}", "--client", f"team-b={TEAM_B}",
                         *(arg for name in ("client", "chief", "worker-0")
                           for arg in ("--client", f"tf-{name}={TRAIN}/{name}")),
                         "--jwt-issuer", ISSUER]) == 0
    return root


class TestEveryExample:
    def test_there_are_examples_for_the_main_scenarios(self):
        """The scenarios the README points to all exist."""
        names = {p.name for p in CONFIGS}
        assert {"modelserver-mtls.yaml", "modelserver-jwt.yaml", "multi-upstream.yaml",
                "admin-reload.yaml", "sidecar-unix.yaml", "read-only-metadata.yaml",
                "cluster-client-egress.yaml", "cluster-chief-ingress.yaml",
                "cluster-worker-ingress.yaml", "cluster-worker-egress.yaml"} <= names

    @pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
    def test_example_passes_tfgate_check(self, tree, path, capsys):
        """`tfgate check --strict` accepts the example: schema, policy, files and TLS
        material, and no warning (a shipped example says what it means)."""
        assert cli.cmd_check(argparse.Namespace(config=tree / "examples" / path.name,
                                                strict=True)) == 0
        assert ": ok (" in capsys.readouterr().out

    @pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
    def test_example_documents_its_purpose(self, path):
        """Each example opens with a comment saying what it is for and how to try it."""
        head = path.read_text().splitlines()[:3]
        assert head[0].startswith("# ") and len(head[0]) > 20
        assert "make-dev-pki" in path.read_text()


@contextlib.contextmanager
def serving_example(tree: pathlib.Path, name: str, backend_address: str):
    """Run an example with its addresses pointed at a free local port and the test backend."""
    data = yaml.safe_load((tree / "examples" / name).read_text())
    data["listen"]["address"] = "127.0.0.1:0"
    for upstream in data["upstreams"].values():
        upstream["address"] = backend_address
    data["audit"] = {"output": "stderr"}
    server = RunningServer(validate_config(data, base_dir=tree / "examples")).start()
    try:
        yield server
    finally:
        server.stop(0)


def _client(tree: pathlib.Path, name: str | None) -> grpc.ChannelCredentials:
    out = tree / "certs" / "out"
    read = (lambda suffix: (out / f"{name}{suffix}").read_bytes() if name else None)  # noqa: E731
    return grpc.ssl_channel_credentials((out / "ca.pem").read_bytes(), read(".key"), read(".pem"))


@pytest.mark.tf
class TestModelServerExamplesEndToEnd:
    @pytest.fixture
    def apis(self):
        pytest.importorskip("tensorflow")
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        return predict_pb2, prediction_service_pb2_grpc

    def _predict(self, apis, address, creds, model, label=None, metadata=()):
        predict_pb2, grpc_mod = apis
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        if label:
            request.model_spec.version_label = label
        tensor = request.inputs["x"]
        tensor.dtype = 1  # DT_FLOAT
        tensor.tensor_shape.dim.add(size=3)
        tensor.float_val.extend([1.0, 2.0, 3.0])
        with grpc.secure_channel(address, creds) as channel:
            response = grpc_mod.PredictionServiceStub(channel).Predict(
                request, metadata=list(metadata), timeout=10)
        import tensorflow as tf

        return [round(float(v), 3) for v in tf.make_ndarray(response.outputs["y"])]

    def test_mtls_example_per_team_rules(self, tree, clean_backend, apis):
        """modelserver-mtls.yaml: team A gets half_plus_two (stable), team B other_model,
        and each is refused the other's model without the backend seeing it."""
        with serving_example(tree, "modelserver-mtls.yaml", clean_backend.address) as server:
            team_a, team_b = _client(tree, "team-a"), _client(tree, "team-b")
            assert self._predict(apis, server.address, team_a, "half_plus_two",
                                 "stable") == [2.5, 3.0, 3.5]
            assert self._predict(apis, server.address, team_b, "other_model") == [2.0, 3.0, 4.0]
            assert len(clean_backend.records()) == 2
            for creds, model, label in ((team_a, "half_plus_two", "canary"),
                                        (team_a, "other_model", None),
                                        (team_b, "half_plus_two", None)):
                with pytest.raises(grpc.RpcError) as info:
                    self._predict(apis, server.address, creds, model, label)
                assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert len(clean_backend.records()) == 2

    def test_jwt_example_token_only_callers(self, tree, clean_backend, apis):
        """modelserver-jwt.yaml: no client certificate; a token with the right scope is
        enough, and no token (or the wrong scope) is refused before the backend."""
        pem = (tree / "certs" / "out" / "signing.key").read_bytes()
        key = SigningKey("dev-1", "ES256", serialization.load_pem_private_key(pem, None))

        def bearer(scope: str) -> list[tuple[str, str]]:
            claims = mint_claims(issuer=ISSUER, audience="tfgate", subject="svc-1", scope=scope)
            return [("authorization", f"Bearer {key.token(claims)}")]

        with serving_example(tree, "modelserver-jwt.yaml", clean_backend.address) as server:
            anonymous = _client(tree, None)
            assert self._predict(apis, server.address, anonymous, "half_plus_two",
                                 metadata=bearer("models:half_plus_two:predict")) == [3.5, 4.0, 4.5]
            for metadata, code in (((), grpc.StatusCode.UNAUTHENTICATED),
                                   (bearer("other"), grpc.StatusCode.PERMISSION_DENIED)):
                with pytest.raises(grpc.RpcError) as info:
                    self._predict(apis, server.address, anonymous, "half_plus_two",
                                  metadata=metadata)
                assert info.value.code() == code
        assert len(clean_backend.records()) == 1


class TestClusterExamples:
    """The cluster examples decide as their comments say: roles per method, ops per rule,
    addresses from the ClusterSpec (the same decision the data path takes)."""

    def decide(self, tree: pathlib.Path, name: str, who: str, method: str,
               ops: tuple[str, ...] = (), addresses: tuple[str, ...] = ()) -> str:
        from proxy import admission
        from proxy.call import Facts, Principal
        from proxy.inspect.distributed import Address, ClusterFacts, OpUse
        from proxy.state import build_state

        state = build_state(load_config(tree / "examples" / name), connect=False)
        path = next(p for p in state.methods.methods if p.endswith("/" + method))
        facts = Facts(cluster=ClusterFacts(
            ops=tuple(OpUse(op, "test") for op in ops),
            addresses=tuple(Address(a, "job", 0, "test") for a in addresses)))
        principal = Principal(spiffe_id=f"{TRAIN}/{who}", has_certificate=True)
        return admission.decide(state, principal, path, facts).reason.value

    def test_chief_ingress(self, tree):
        name = "cluster-chief-ingress.yaml"
        assert self.decide(tree, name, "client", "StreamingEnqueue", ("Mul", "AddV2")) == "allowed"
        assert self.decide(tree, name, "client", "RunStep") == "allowed"
        assert self.decide(tree, name, "client", "CreateSession",
                           ("CollectiveReduceV2",)) == "allowed"
        for op in ("ReadFile", "EagerPyFunc", "DebugIdentityV2", "DecodeJpeg"):
            assert self.decide(tree, name, "client", "Enqueue", (op,)) == "op-not-allowed"
        assert self.decide(tree, name, "client", "CreateContext",
                           addresses=("10.0.0.9:2222",)) == "address-not-allowed"
        assert self.decide(tree, name, "worker-0", "RecvTensor") == "allowed"
        assert self.decide(tree, name, "worker-0", "RunStep") == "method-not-allowed"
        assert self.decide(tree, name, "client", "Reset") == "method-not-allowed"

    def test_worker_ingress(self, tree):
        name = "cluster-worker-ingress.yaml"
        assert self.decide(tree, name, "chief", "RegisterGraph", ("_Recv", "Mul")) == "allowed"
        assert self.decide(tree, name, "chief", "RegisterGraph", ("WriteFile",)) == "op-not-allowed"
        assert self.decide(tree, name, "client", "RegisterGraph") == "method-not-allowed"
        assert self.decide(tree, name, "client", "CreateSession") == "method-not-allowed"
        assert self.decide(tree, name, "client", "Enqueue", ("Mul",)) == "allowed"

    def test_egresses(self, tree):
        assert self.decide(tree, "cluster-client-egress.yaml", "client", "Enqueue",
                           ("ReadFile",)) == "op-not-allowed"
        assert self.decide(tree, "cluster-client-egress.yaml", "client", "RunStep") == "allowed"
        assert self.decide(tree, "cluster-worker-egress.yaml", "worker-0",
                           "RecvTensor") == "allowed"
        assert self.decide(tree, "cluster-worker-egress.yaml", "worker-0",
                           "CreateContext") == "method-not-allowed"


def test_relative_paths_are_resolved_against_the_example(tree):
    """`../certs/out/...` in an example means next to the repository's examples/ folder."""
    cfg = load_config(tree / "examples" / "modelserver-mtls.yaml")
    assert cfg.listen.tls is not None
    assert cfg.listen.tls.cert.resolve() == tree / "certs" / "out" / "server.pem"


README = EXAMPLES.parent / "README.md"


def _readme_yaml_blocks() -> list[str]:
    import re

    return re.findall(r"```yaml\n(.*?)```", README.read_text(), re.DOTALL)


class TestReadme:
    def test_annotated_config_passes_tfgate_check(self, tree, capsys):
        """The README's complete annotated config is valid as printed."""
        (full,) = [b for b in _readme_yaml_blocks() if b.startswith("# tfgate.yaml")]
        path = tree / "examples" / "readme.yaml"
        path.write_text(full)
        assert cli.cmd_check(argparse.Namespace(config=path, strict=True)) == 0

    def test_cookbook_rules_are_valid_rules(self, tree):
        """Each cookbook snippet is a rule the README's annotated config accepts."""
        (full,) = [b for b in _readme_yaml_blocks() if b.startswith("# tfgate.yaml")]
        snippets = [b for b in _readme_yaml_blocks() if b.startswith("- name:")]
        assert len(snippets) >= 4
        for snippet in snippets:
            data = yaml.safe_load(full)
            data["policy"]["rules"] = yaml.safe_load(snippet)
            validate_config(data, base_dir=tree / "examples")


    def test_cluster_configs_are_valid_as_printed(self, tree):
        """The README's TF cluster configs (ingresses, egress) pass validation and build,
        with the files they name made by make-dev-pki beside examples/."""
        from proxy.state import build_state

        blocks = [b for b in _readme_yaml_blocks() if b.startswith("# TF cluster:")]
        assert len(blocks) == 3
        for block in blocks:
            cfg = validate_config(yaml.safe_load(block), base_dir=tree / "examples")
            assert {u.kind for u in cfg.upstreams.values()} == {"cluster"}
            build_state(cfg, connect=False)


def test_readme_lists_every_reason():
    """Every reason a call can end with is named in the README's list."""
    from proxy.errors import Reason

    text = README.read_text()
    missing = [r.value for r in Reason if f"`{r.value}`" not in text]
    assert missing == []
