"""Tests for proxy.cli: `tfgate check` and `tfgate explain`, their output and exit codes."""

from __future__ import annotations

import copy
import json
import pathlib
import subprocess
import sys
import threading
from typing import Any

import pytest
import yaml

from proxy.cli import main
from tfgate_dev.devpki import DevPKI, SigningKey, write_jwks

REPO = pathlib.Path(__file__).resolve().parent.parent
ALICE = "spiffe://example.org/ns/prod/sa/alice"


@pytest.fixture(scope="module")
def etc(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A config directory with a dev PKI and a JWKS, referenced by relative paths."""
    out = tmp_path_factory.mktemp("etc")
    pki = DevPKI.create(out / "tls")
    pki.server()
    write_jwks(out / "jwks.json", [SigningKey.generate("k1", "ES256")])
    return out


BASE: dict[str, Any] = {
    "listen": {"address": "127.0.0.1:0", "tls": {
        "cert": "tls/server.pem", "key": "tls/server.key", "client_ca": "tls/ca.pem"}},
    "upstreams": {"serving": {"address": "127.0.0.1:8500"}},
    "authn": {"jwt": {"issuers": [{"issuer": "https://issuer.example", "audiences": ["tfgate"],
                                   "algorithms": ["ES256"], "jwks_file": "jwks.json"}]}},
    "audit": {"output": "audit.log"},
    "policy": {"rules": [
        {"name": "alice-mnist", "principals": {"spiffe": [ALICE]}, "methods": ["Predict"],
         "models": ["mnist"], "versions": [1, "stable"], "signatures": ["serving_default"]},
        {"name": "ops", "principals": {"sub": ["ops"]}, "require": ["certificate"],
         "methods": ["HandleReloadConfigRequest", "GetModelStatus"], "models": ["*"]},
    ]},
}


def _write(etc: pathlib.Path, doc: Any, name: str = "tfgate.yaml") -> pathlib.Path:
    path = etc / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def _changed(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    doc.update(changes)
    return doc


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


class TestCheck:
    def test_ok(self, etc: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A valid config checks out with exit 0 and a summary."""
        path = _write(etc, BASE)
        code, out, err = _run(capsys, "check", "--config", str(path))
        assert code == 0, err
        assert out.strip() == f"{path}: ok (2 rules, 1 upstreams)"

    @pytest.mark.parametrize(("doc", "path"), [
        (_changed(bogus=1), "bogus"),
        (_changed(listen={"address": "0.0.0.0:8443", "plaintext": True}), "listen.plaintext"),
        (_changed(upstreams={"x": {"address": "nope"}}), "upstreams.x.address"),
        (_changed(default_upstream="nowhere"), "default_upstream"),
        (_changed(policy={"rules": [{"principals": {"cn": ["a"]}, "methods": ["Predict"],
                                     "models": ["m", None]}]}), "policy.rules[0].models[1]"),
        (_changed(policy={"rules": [{"principals": {"cn": ["a"]},
                                     "methods": ["Predict", "Predict*"], "models": ["m"]}]}),
         "policy.rules[0].methods[1]"),
        (_changed(policy={"rules": [{"principals": {"cn": ["a"]},
                                     "methods": ["/tensorflow.ProfilerService/*"]}]}),
         "policy.rules[0].methods[0]"),
    ])
    def test_config_errors(self, etc: pathlib.Path, capsys: pytest.CaptureFixture[str],
                           doc: dict[str, Any], path: str) -> None:
        """Config errors, including those found when compiling the policy, exit 2 naming the key."""
        code, out, err = _run(capsys, "check", "--config", str(_write(etc, doc, "bad.yaml")))
        assert code == 2 and out == ""
        assert err.startswith(f"tfgate: config error: {path}: ")

    def test_file_problems(self, etc: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A listener key that is not a PEM key is found by check, naming listen.tls.key."""
        (etc / "not-a-key.pem").write_text("hello\n")
        doc = copy.deepcopy(BASE)
        doc["listen"]["tls"]["key"] = "not-a-key.pem"
        code, _, err = _run(capsys, "check", "--config", str(_write(etc, doc, "bad.yaml")))
        assert code == 2 and "listen.tls.key" in err

    def test_key_not_matching_cert(self, etc: pathlib.Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
        """A server key that does not belong to the certificate is refused."""
        doc = copy.deepcopy(BASE)
        doc["listen"]["tls"]["key"] = "tls/ca.key"
        code, _, err = _run(capsys, "check", "--config", str(_write(etc, doc, "bad.yaml")))
        assert code == 2 and "listen.tls.key" in err and "does not match" in err

    def test_bad_jwks(self, etc: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A JWKS holding a private key is refused at check time, naming the issuer."""
        jwk = json.loads((etc / "jwks.json").read_text())["keys"][0]
        (etc / "private.json").write_text(json.dumps({"keys": [{**jwk, "d": "AAAA"}]}))
        doc = copy.deepcopy(BASE)
        doc["authn"]["jwt"]["issuers"][0]["jwks_file"] = "private.json"
        code, _, err = _run(capsys, "check", "--config", str(_write(etc, doc, "bad.yaml")))
        assert code == 2 and "authn.jwt.issuers[0].jwks_file" in err and "AAAA" not in err

    def test_yaml_error(self, etc: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Invalid YAML exits 2 and says so."""
        path = _write(etc, "listen: [\n", "broken.yaml")
        code, _, err = _run(capsys, "check", "--config", str(path))
        assert code == 2 and "not valid YAML" in err

    def test_missing_file(self, etc: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A config file that does not exist exits 2."""
        code, _, err = _run(capsys, "check", "--config", str(etc / "absent.yaml"))
        assert code == 2 and "cannot read config" in err

    def test_subprocess(self, etc: pathlib.Path) -> None:
        """`python -m proxy.cli check` works as a process: exit 0, then exit 2 with the key path."""
        ok = subprocess.run([sys.executable, "-m", "proxy.cli", "check", "--config",
                             str(_write(etc, BASE, "sub.yaml"))],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
        assert ok.returncode == 0, ok.stderr
        assert "ok (2 rules" in ok.stdout
        bad = subprocess.run([sys.executable, "-m", "proxy.cli", "check", "--config",
                              str(_write(etc, _changed(bogus=1), "sub-bad.yaml"))],
                             capture_output=True, text=True, cwd=REPO, timeout=60)
        assert bad.returncode == 2 and "tfgate: config error: bogus:" in bad.stderr


class TestExplain:
    @pytest.fixture
    def config(self, etc: pathlib.Path) -> str:
        return str(_write(etc, BASE, "explain.yaml"))

    def test_allow(self, config: str, capsys: pytest.CaptureFixture[str]) -> None:
        """An allowed call prints ALLOW, the principal, the target and the rule."""
        code, out, _ = _run(capsys, "explain", "--config", config, "--method", "Predict",
                            "--model", "mnist", "--version", "1", "--spiffe", ALICE)
        assert code == 0
        lines = out.splitlines()
        assert lines[0] == "ALLOW /tensorflow.serving.PredictionService/Predict"
        assert f"principal: {ALICE}" in out
        assert "model: mnist version: 1 signature: serving_default" in out
        assert "reason: allowed" in out and "rule: alice-mnist" in out

    @pytest.mark.parametrize(("args", "reason", "why"), [
        (["--model", "bert", "--version", "1"], "model-not-allowed", 'model "bert"'),
        (["--model", "mnist", "--version", "2"], "version-not-allowed", "version 2"),
        (["--model", "mnist"], "version-not-allowed", "version latest"),
        (["--model", "mnist", "--label", "canary"], "version-not-allowed", "label:canary"),
        (["--model", "mnist", "--label", "stable", "--signature", "admin"],
         "signature-not-allowed", 'signature "admin"'),
    ])
    def test_deny_reasons(self, config: str, capsys: pytest.CaptureFixture[str],
                          args: list[str], reason: str, why: str) -> None:
        """A denied call prints DENY with the failed check's reason and message."""
        code, out, _ = _run(capsys, "explain", "--config", config, "--method", "Predict",
                            "--spiffe", ALICE, *args)
        assert code == 1  # DENY: a CI step can gate on it
        assert out.startswith("DENY /tensorflow.serving.PredictionService/Predict")
        assert f"reason: {reason}" in out and why in out

    def test_deny_method(self, config: str, capsys: pytest.CaptureFixture[str]) -> None:
        """A method no rule grants the caller is denied with method-not-allowed."""
        code, out, _ = _run(capsys, "explain", "--config", config, "--method", "Classify",
                         "--model", "mnist", "--spiffe", ALICE)
        assert out.startswith("DENY") and "reason: method-not-allowed" in out and code == 1

    def test_deny_unknown_principal(self, config: str, capsys: pytest.CaptureFixture[str]) -> None:
        """A caller no rule names is denied with no-rule-for-principal."""
        _, out, _ = _run(capsys, "explain", "--config", config, "--method", "Predict",
                         "--model", "mnist", "--cn", "mallory")
        assert out.startswith("DENY") and "reason: no-rule-for-principal" in out

    def test_identity_requirement(self, config: str, capsys: pytest.CaptureFixture[str]) -> None:
        """The ops rule requires a certificate too: a token alone is not enough."""
        _, out, _ = _run(capsys, "explain", "--config", config,
                         "--method", "HandleReloadConfigRequest", "--sub", "ops",
                         "--iss", "https://issuer.example")
        assert out.startswith("DENY") and "reason: identity-requirement-not-met" in out
        code, out, _ = _run(capsys, "explain", "--config", config,
                            "--method", "HandleReloadConfigRequest", "--sub", "ops",
                            "--iss", "https://issuer.example", "--cn", "ops-laptop")
        assert out.startswith("ALLOW") and "rule: ops" in out and code == 0

    def test_metadata_has_no_signature(self, config: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
        """GetModelStatus is explained without a signature."""
        _, out, _ = _run(capsys, "explain", "--config", config, "--method", "GetModelStatus",
                         "--model", "any", "--sub", "ops", "--cn", "x")
        assert out.startswith("ALLOW") and "signature: None" in out

    @pytest.mark.parametrize(("args", "key"), [
        (["--method", "predict", "--model", "m"], "--method"),
        (["--method", "*", "--model", "m"], "--method"),
        (["--method", "Predict"], "--model"),
    ])
    def test_usage_errors(self, config: str, capsys: pytest.CaptureFixture[str],
                          args: list[str], key: str) -> None:
        """Unknown or ambiguous methods and a missing model exit 2 naming the flag."""
        code, _, err = _run(capsys, "explain", "--config", config, "--cn", "x", *args)
        assert code == 2 and err.startswith(f"tfgate: config error: {key}: ")
        assert "unpack" not in err


class TestExplainRest:
    """`--rest 'VERB PATH'`: routed as the REST front routes it, then the same decision."""

    @pytest.fixture
    def config(self, etc: pathlib.Path) -> str:
        return str(_write(etc, BASE, "explain-rest.yaml"))

    @pytest.mark.parametrize(("line", "code", "shown"), [
        ("POST /v1/models/mnist/versions/1:predict", 0, "model: mnist version: 1"),
        ("POST /v1/models/mnist/labels/stable:predict", 0, "version: label:stable"),
        ("POST /v1/models/mnist/versions/2:predict", 1, "reason: version-not-allowed"),
        ("POST /v1/models/mnist:classify", 1, "reason: method-not-allowed"),
        ("POST /v1/models/m%6Eist/versions/1:predict", 0, "model: mnist version: 1"),
    ])
    def test_same_decision_as_the_grpc_method(self, config: str, line: str, code: int,
                                               shown: str, capsys) -> None:
        got, out, _ = _run(capsys, "explain", "--config", config, "--rest", line,
                           "--spiffe", ALICE)
        assert got == code and shown in out, out

    def test_a_get_is_a_status_or_metadata_request(self, config: str, capsys) -> None:
        code, out, _ = _run(capsys, "explain", "--config", config, "--rest",
                            "GET /v1/models/any", "--sub", "ops", "--cn", "x")
        assert code == 0
        assert out.startswith("ALLOW /tensorflow.serving.ModelService/GetModelStatus")
        assert "signature: None" in out

    @pytest.mark.parametrize(("args", "said"), [
        (["--rest", "POST /v1/models/mnist:explode"], "no REST API path matches"),
        (["--rest", "PUT /v1/models/mnist:predict"], "use GET or POST"),
        (["--rest", "GET /v1/models/./metadata"], "dot segment"),
        (["--rest", "POST /v1/models/mnist:predict", "--model", "mnist"], "leave out"),
    ])
    def test_a_line_the_front_refuses_is_a_usage_error(self, config: str, args: list[str],
                                                       said: str, capsys) -> None:
        code, _, err = _run(capsys, "explain", "--config", config, "--cn", "x", *args)
        assert code == 2 and err.startswith("tfgate: config error: --rest: ") and said in err

    def test_method_or_rest_is_required(self, config: str, capsys) -> None:
        with pytest.raises(SystemExit) as info:
            main(["explain", "--config", config, "--cn", "x"])
        assert info.value.code == 2


class TestExplainExitCodes:
    """0 on ALLOW, 1 on DENY, 2 on usage or config errors: `tfgate explain` gates CI."""

    def test_as_a_process(self, etc: pathlib.Path) -> None:
        config = str(_write(etc, BASE, "gate.yaml"))

        def explain(*args: str) -> int:
            return subprocess.run([sys.executable, "-m", "proxy.cli", "explain", "--config",
                                   config, "--method", "Predict", *args],
                                  capture_output=True, text=True, cwd=REPO,
                                  timeout=60).returncode

        assert explain("--model", "mnist", "--version", "1", "--spiffe", ALICE) == 0
        assert explain("--model", "bert", "--version", "1", "--spiffe", ALICE) == 1
        assert explain("--spiffe", ALICE) == 2  # no --model
        assert explain("--model", "m", "--version", "x") == 2  # argparse: not a number

    def test_no_credentials_is_a_deny(self, etc: pathlib.Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
        """A described caller with no identity is refused as the data path refuses it."""
        code, out, _ = _run(capsys, "explain", "--config", str(_write(etc, BASE, "e.yaml")),
                            "--method", "Predict", "--model", "mnist")
        assert code == 1 and "reason: no-credentials" in out

    def test_token_required(self, etc: pathlib.Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
        """With authn.jwt.required, a certificate alone is explained as token-required."""
        doc = copy.deepcopy(BASE)
        doc["authn"]["jwt"]["required"] = True
        config = str(_write(etc, doc, "required.yaml"))
        code, out, _ = _run(capsys, "explain", "--config", config, "--method", "Predict",
                            "--model", "mnist", "--version", "1", "--spiffe", ALICE)
        assert code == 1 and "reason: token-required" in out
        code, out, _ = _run(capsys, "explain", "--config", config, "--method", "Predict",
                            "--model", "mnist", "--version", "1", "--spiffe", ALICE,
                            "--sub", "svc", "--iss", "https://issuer.example")
        assert code == 0 and out.startswith("ALLOW")


WARNED_RULE = {"name": "models", "principals": {"spiffe": [ALICE]},
               "methods": ["/tensorflow.serving.ModelService/*"], "models": ["*"]}


class TestCheckReportsEverything:
    def test_every_error_one_line_each(self, etc: pathlib.Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
        doc = _changed(bogus=1, upstreams={"x": {"address": "nope"}})
        code, out, err = _run(capsys, "check", "--config", str(_write(etc, doc, "bad.yaml")))
        assert code == 2 and out == ""
        assert err.splitlines() == [
            "tfgate: config error: upstreams.x.address: expected host:port or unix:PATH, "
            "got 'nope'",
            "tfgate: config error: bogus: Extra inputs are not permitted"]

    def test_duplicate_policy_block(self, etc: pathlib.Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
        """A second `policy:` (which YAML would let replace the first) fails check."""
        text = yaml.safe_dump(BASE) + "policy: {rules: []}\n"
        code, _, err = _run(capsys, "check", "--config", str(_write(etc, text, "dup.yaml")))
        assert code == 2
        assert err.startswith("tfgate: config error: policy: duplicate key on line ")

    def test_warnings_are_printed_and_pass(self, etc: pathlib.Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
        doc = copy.deepcopy(BASE)
        doc["policy"]["rules"].append(WARNED_RULE)
        path = _write(etc, doc, "warned.yaml")
        code, out, err = _run(capsys, "check", "--config", str(path))
        assert code == 0
        assert out.strip() == f"{path}: ok (3 rules, 1 upstreams, 1 warnings)"
        assert err.startswith("tfgate: warning: policy.rules[2].methods[0]: ")
        assert "HandleReloadConfigRequest" in err

    def test_strict_turns_warnings_into_errors(self, etc: pathlib.Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
        doc = copy.deepcopy(BASE)
        doc["policy"]["rules"] += [WARNED_RULE, {**WARNED_RULE, "methods": ["**"]}]
        code, out, err = _run(capsys, "check", "--strict", "--config",
                              str(_write(etc, doc, "warned.yaml")))
        assert code == 2 and out == ""
        lines = err.splitlines()
        assert [line.split(": ")[2] for line in lines] == [
            "policy.rules[2].methods[0]", "policy.rules[3].name", "policy.rules[3].methods[0]"]
        assert all(line.startswith("tfgate: config error: ") and line.endswith("(--strict)")
                   for line in lines)

    def test_strict_passes_a_clean_config(self, etc: pathlib.Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
        code, out, err = _run(capsys, "check", "--strict", "--config",
                              str(_write(etc, BASE, "clean.yaml")))
        assert (code, err) == (0, "") and "ok (2 rules, 1 upstreams)" in out


def test_serve_logs_warnings_at_start(etc: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """`tfgate serve` serves a config with warnings, and says each one on stderr first."""
    doc = copy.deepcopy(BASE)
    doc["policy"]["rules"].append(WARNED_RULE)
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "serve", "--workers", "1",
                             "--config", str(_write(etc, doc, "serve.yaml")),
                             "--ready-file", str(ready)],
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    guard = threading.Timer(60, proc.kill)  # a hang guard, not a timing assertion
    guard.start()
    try:
        lines = []
        for line in proc.stderr:  # ends when the process does
            lines.append(line)
            if " start " in line:
                break
    finally:
        guard.cancel()
        proc.terminate()
        proc.wait(30)
    assert any(" start " in line for line in lines), lines
    warned = [line for line in lines
              if "warning: config key=policy.rules[2].methods[0]" in line]
    assert len(warned) == 1 and "HandleReloadConfigRequest" in warned[0]
