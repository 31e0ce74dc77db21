"""Configuring the cluster family: egress listeners' local identity, one process for a
cluster upstream, and `tfgate explain --op` for "may P run op X via method M"."""

from __future__ import annotations

import argparse
import pathlib
from typing import Any

import grpc
import pytest
import yaml

from proxy.cli import build_parser, main
from proxy.config import validate_config
from proxy.errors import ConfigError
from proxy.explain import explain
from tests import distributed_requests as rq

CLIENT = "spiffe://tfgate.test/cluster/client"


def egress(address: str = "127.0.0.1:0", **listen: Any) -> dict[str, Any]:
    return {
        "listen": {"address": address, "plaintext": True, "local_identity": CLIENT, **listen},
        "upstreams": {"w": {"address": "127.0.0.1:1", "kind": "cluster"}},
        "cluster": {"addresses": ["127.0.0.1:*"]},
        "policy": {"rules": [{"name": "local", "principals": {"spiffe": [CLIENT]},
                              "methods": ["/tensorflow.eager.EagerService/*"],
                              "ops": {"allow": ["Mul", "Const"]}}]},
        "audit": {"output": "stderr"},
    }


class TestLocalIdentity:
    def test_a_plaintext_listener_may_name_its_callers(self) -> None:
        """Certificate rules validate on a plaintext egress listener with a local identity."""
        assert validate_config(egress()).listen.local_identity == CLIENT
        validate_config(egress("unix:/run/tfgate/egress.sock"))

    @pytest.mark.parametrize(("listen", "problem"), [
        ({"local_identity": "client"}, "must be a SPIFFE ID"),
        ({"local_identity": "spiffe://tfgate.test/a/../b"}, "must be a SPIFFE ID"),
    ])
    def test_bad_identities(self, listen: dict[str, Any], problem: str) -> None:
        with pytest.raises(ConfigError, match=problem):
            validate_config(egress(**listen))

    def test_never_on_a_network_address_or_with_tls(self, pki: Any) -> None:
        with pytest.raises(ConfigError, match="plaintext listener refused on non-loopback"):
            validate_config(egress("0.0.0.0:8443"))
        config = egress()
        del config["listen"]["plaintext"]
        config["listen"]["tls"] = {"cert": str(pki.server.cert_path),
                                   "key": str(pki.server.key_path),
                                   "client_ca": str(pki.ca.ca.cert_path)}
        with pytest.raises(ConfigError, match=r"listen\.local_identity: only for a plaintext"):
            validate_config(config)

    def test_without_it_a_plaintext_listener_needs_tokens(self) -> None:
        config = egress()
        del config["listen"]["local_identity"]
        with pytest.raises(ConfigError, match="must include token"):
            validate_config(config)

    def test_every_caller_is_the_local_identity(self, make_proxy: Any,
                                                capfd: pytest.CaptureFixture[str]) -> None:
        """A TF-like caller with no credentials at all is judged as the local identity:
        its allowed op goes through, its ReadFile does not."""
        from tests.test_cluster_stream import EagerBackend

        eager = EagerBackend()
        try:
            config = egress()
            config["upstreams"]["w"]["address"] = eager.address
            proxy = make_proxy(config)
            with grpc.insecure_channel(proxy.address) as channel:
                eager_call = "/tensorflow.eager.EagerService/"
                channel.unary_unary(eager_call + "CreateContext")(rq.create_context(3), timeout=10)
                enqueue = channel.unary_unary(eager_call + "Enqueue")
                enqueue(rq.enqueue(3, rq.op_item("Mul")), timeout=10)
                with pytest.raises(grpc.RpcError) as info:
                    enqueue(rq.enqueue(3, rq.op_item("ReadFile")), timeout=10)
            assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
            assert len(eager.received) == 1
            audit = [yaml.safe_load(line) for line in capfd.readouterr().err.splitlines()
                     if line.startswith('{"method"')]
            assert [e["principal"] for e in audit] == [CLIENT] * 3
        finally:
            eager.stop()


def _write(tmp_path: pathlib.Path, config: dict[str, Any]) -> pathlib.Path:
    path = tmp_path / "tfgate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_cluster_upstream_is_served_by_one_process(tmp_path: pathlib.Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Handle ownership lives in one process's memory: --workers 2 is refused."""
    path = _write(tmp_path, egress("127.0.0.1:18999"))
    assert main(["serve", "--config", str(path), "--workers", "2"]) == 2
    assert "cluster upstream needs --workers 1" in capsys.readouterr().err


class TestExplain:
    def explain(self, tmp_path: pathlib.Path, *argv: str) -> tuple[bool, str]:
        path = _write(tmp_path, egress())
        args: argparse.Namespace = build_parser().parse_args(["explain", "--config", str(path),
                                                              *argv])
        decision, text = explain(validate_config(egress()), args)
        return decision.allowed, text

    def test_an_allowed_op(self, tmp_path: pathlib.Path) -> None:
        allowed, text = self.explain(tmp_path, "--method", "StreamingEnqueue", "--op", "Mul",
                                     "--spiffe", CLIENT)
        assert allowed and text.startswith("ALLOW /tensorflow.eager.EagerService/StreamingEnqueue")
        assert "ops: Mul" in text and "rule: local" in text

    def test_a_refused_op_says_why(self, tmp_path: pathlib.Path) -> None:
        allowed, text = self.explain(tmp_path, "--method", "Enqueue", "--op", "Mul",
                                     "--op", "ReadFile", "--spiffe", CLIENT)
        assert not allowed and "reason: op-not-allowed" in text
        assert 'op "ReadFile"' in text and "file-io" in text

    def test_an_address(self, tmp_path: pathlib.Path) -> None:
        allowed, text = self.explain(tmp_path, "--method", "CreateContext", "--address",
                                     "10.1.1.1:2222", "--spiffe", CLIENT)
        assert not allowed and "reason: address-not-allowed" in text

    def test_another_principal(self, tmp_path: pathlib.Path) -> None:
        allowed, text = self.explain(tmp_path, "--method", "Enqueue", "--op", "Mul",
                                     "--spiffe", "spiffe://tfgate.test/other")
        assert not allowed and "reason: no-rule-for-principal" in text

    def test_the_command_line(self, tmp_path: pathlib.Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
        path = _write(tmp_path, egress())
        assert main(["explain", "--config", str(path), "--method", "Enqueue", "--op",
                     "EagerPyFunc", "--spiffe", CLIENT]) == 1  # explain exits 1 on DENY
        out = capsys.readouterr().out
        assert out.startswith("DENY") and "python" in out
