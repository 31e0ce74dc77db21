"""Tests for proxy.config: what a valid config is, and that every refusal names its key."""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import pydantic
import pytest
import yaml

from proxy.config import Config, is_loopback, load_config, parse_address, validate_config
from proxy.errors import ConfigError

PLAINTEXT = {
    "listen": {"address": "127.0.0.1:8443", "plaintext": True},
    "upstreams": {"serving": {"address": "127.0.0.1:8500"}},
}
TOKEN_RULE = {"principals": {"sub": ["alice"]}, "methods": ["Predict"], "models": ["*"]}
CERT_RULE = {"principals": {"spiffe": ["spiffe://example.org/*"]}, "methods": ["Predict"],
             "models": ["*"]}


@pytest.fixture
def files(tmp_path: pathlib.Path) -> dict[str, pathlib.Path]:
    """Placeholder files: config validation checks that files exist, not what they hold."""
    out = {}
    for name in ("server.pem", "server.key", "ca.pem", "jwks.json", "issuer.pem"):
        out[name] = tmp_path / name
        out[name].write_text("placeholder\n")
    return out


def _jwt(files: dict[str, pathlib.Path], **issuer: Any) -> dict[str, Any]:
    entry = {"issuer": "https://issuer.example", "audiences": ["tfgate"],
             "algorithms": ["ES256"], "jwks_file": str(files["jwks.json"]), **issuer}
    return {"jwt": {"issuers": [entry]}}


def _mtls(files: dict[str, pathlib.Path], address: str = "0.0.0.0:8443", **tls: Any) -> dict:
    return {"address": address, "tls": {"cert": str(files["server.pem"]),
                                        "key": str(files["server.key"]),
                                        "client_ca": str(files["ca.pem"]), **tls}}


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    out.update(changes)
    return out


def _error(data: Any, base_dir: pathlib.Path | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        validate_config(data, base_dir)
    return info.value


class TestValidConfigs:
    def test_minimal_plaintext_loopback(self) -> None:
        """A loopback plaintext listener and one upstream is a complete config."""
        cfg = validate_config(copy.deepcopy(PLAINTEXT))
        assert isinstance(cfg, Config)
        assert cfg.listen.plaintext and cfg.policy.rules == []
        assert cfg.upstream_for_default() == "serving"

    def test_minimal_mtls(self, files: dict[str, pathlib.Path]) -> None:
        """mTLS on a public address with a certificate rule is accepted; client_auth is require."""
        cfg = validate_config(_with(PLAINTEXT, listen=_mtls(files),
                                    policy={"rules": [CERT_RULE]}))
        assert cfg.listen.tls is not None and cfg.listen.tls.client_auth == "require"
        assert cfg.listen.tls.client_ca == files["ca.pem"]

    def test_defaults(self, files: dict[str, pathlib.Path]) -> None:
        """Unset sections get their documented defaults."""
        cfg = validate_config(_with(PLAINTEXT, listen=_mtls(files), policy={"rules": [
            {"principals": {"any_authenticated": True}, "methods": ["Predict"], "models": ["*"]}]}))
        rule = cfg.policy.rules[0]
        assert rule.versions == ["*"] and rule.signatures == ["*"] and rule.require == []
        assert cfg.authn.jwt is None and cfg.audit.output == "stderr"
        assert cfg.listen.max_message_bytes == 64 * 1024 * 1024

    def test_config_is_frozen(self) -> None:
        """A validated config cannot be changed in place (it is swapped whole on reload)."""
        cfg = validate_config(copy.deepcopy(PLAINTEXT))
        with pytest.raises(pydantic.ValidationError):
            cfg.listen.plaintext = False  # type: ignore[misc]

    def test_versions_numbers_labels_latest(self, files: dict[str, pathlib.Path]) -> None:
        """Versions take numbers, labels, latest and *; YAML ints stay ints."""
        rule = {**TOKEN_RULE, "versions": [0, 3, "stable", "latest"]}
        cfg = validate_config(_with(PLAINTEXT, authn=_jwt(files), policy={"rules": [rule]}))
        assert cfg.policy.rules[0].versions == [0, 3, "stable", "latest"]


class TestErrorPaths:
    @pytest.mark.parametrize(("change", "path"), [
        ({"bogus": 1}, "bogus"),
        ({"listen": {"address": "127.0.0.1:1", "plaintext": True, "bogus": 1}}, "listen.bogus"),
        ({"upstreams": {"x": {"address": "nope"}}}, "upstreams.x.address"),
        ({"upstreams": {"x": {"address": "host:99999"}}}, "upstreams.x.address"),
        ({"upstreams": {"x": {"address": "unix:"}}}, "upstreams.x.address"),
        ({"upstreams": {"x": {"address": "h:1", "tls": {"ca": "/nonexistent/ca.pem"}}}},
         "upstreams.x.tls.ca"),
        ({"upstreams": {}}, "upstreams"),
        ({"server": {"threads": 0}}, "server.threads"),
        ({"identity": {"forward_metadata_key": "X-Id"}}, "identity.forward_metadata_key"),
    ])
    def test_key_path_in_error(self, change: dict, path: str) -> None:
        """The error's path is the bad key, and the message starts with it."""
        err = _error(_with(PLAINTEXT, **change))
        assert err.path == path
        assert str(err).startswith(f"{path}: ")

    def test_rule_model_item_path(self) -> None:
        """A bad item deep in the policy is named down to its index."""
        rules = [CERT_RULE, CERT_RULE, {**TOKEN_RULE, "models": ["ok", 7]}]
        err = _error(_with(PLAINTEXT, policy={"rules": rules}))
        assert err.path == "policy.rules[2].models[1]"

    @pytest.mark.parametrize("bad", [True, 1.5, -1, "", None])
    def test_bad_version_item(self, bad: Any) -> None:
        """Booleans, floats, negatives, empty labels and nulls are not versions."""
        rule = {**TOKEN_RULE, "versions": [1, bad]}
        err = _error(_with(PLAINTEXT, policy={"rules": [rule]}))
        assert err.path == "policy.rules[0].versions[1]"

    def test_empty_principals(self) -> None:
        """A rule must say whom it applies to."""
        rule = {**TOKEN_RULE, "principals": {}}
        err = _error(_with(PLAINTEXT, policy={"rules": [rule]}))
        assert err.path == "policy.rules[0].principals"
        assert "any_authenticated" in err.problem

    def test_any_authenticated_with_matchers(self) -> None:
        """any_authenticated cannot be mixed with matchers (it would silently widen them)."""
        rule = {**TOKEN_RULE, "principals": {"sub": ["a"], "any_authenticated": True}}
        assert _error(_with(PLAINTEXT, policy={"rules": [rule]})).path == (
            "policy.rules[0].principals")

    def test_unknown_require(self) -> None:
        """`require` takes only certificate and token."""
        rule = {**TOKEN_RULE, "require": ["password"]}
        assert _error(_with(PLAINTEXT, policy={"rules": [rule]})).path == (
            "policy.rules[0].require[0]")

    def test_default_upstream_unknown(self) -> None:
        """A default_upstream that names no upstream is reported at default_upstream."""
        err = _error(_with(PLAINTEXT, default_upstream="other"))
        assert err.path == "default_upstream"
        assert "'other'" in err.problem

    def test_route_upstream_unknown(self) -> None:
        """A route to an unknown upstream is named by its index."""
        routes = [{"models": ["a*"], "upstream": "serving"}, {"models": ["b*"], "upstream": "gone"}]
        err = _error(_with(PLAINTEXT, routes=routes))
        assert err.path == "routes[1].upstream"

    def test_not_a_mapping(self) -> None:
        """A document that is not a mapping is refused before anything else."""
        err = _error(["listen"])
        assert "mapping" in str(err)


class TestListenerSafety:
    @pytest.mark.parametrize("address", ["0.0.0.0:8443", "10.0.0.1:8443", "[::]:8443",
                                         "example.com:8443", "0:8443", "[::ffff:127.0.0.1]:1"])
    def test_plaintext_refused_off_loopback(self, address: str) -> None:
        """Plaintext on anything but loopback or a unix socket is refused at start-up."""
        err = _error(_with(PLAINTEXT, listen={"address": address, "plaintext": True}))
        assert err.path.startswith("listen")
        assert "non-loopback" in err.problem and repr(address) in err.problem

    @pytest.mark.parametrize("address", ["127.0.0.1:8443", "[::1]:8443", "localhost:8443",
                                         "127.0.0.2:1", "unix:/run/tfgate.sock"])
    def test_plaintext_allowed_on_loopback(self, address: str) -> None:
        """Loopback addresses and unix sockets may serve plaintext."""
        cfg = validate_config(_with(PLAINTEXT, listen={"address": address, "plaintext": True}))
        assert cfg.listen.address == address

    def test_neither_tls_nor_plaintext(self) -> None:
        """No tls and no plaintext: the listener must say which it wants."""
        err = _error(_with(PLAINTEXT, listen={"address": "127.0.0.1:8443"}))
        assert err.path.startswith("listen") and "tls is required" in err.problem

    def test_tls_and_plaintext(self, files: dict[str, pathlib.Path]) -> None:
        """tls and plaintext together is contradictory."""
        listen = _mtls(files, "127.0.0.1:1")
        listen["plaintext"] = True
        assert "not both" in _error(_with(PLAINTEXT, listen=listen)).problem

    def test_client_ca_required(self, files: dict[str, pathlib.Path]) -> None:
        """client_auth require (the default) without client_ca names listen.tls.client_ca."""
        listen = _mtls(files)
        del listen["tls"]["client_ca"]
        err = _error(_with(PLAINTEXT, listen=listen))
        assert err.path == "listen.tls.client_ca"

    def test_client_ca_missing_file(self, files: dict[str, pathlib.Path]) -> None:
        """A client_ca that does not exist names the key and the file."""
        err = _error(_with(PLAINTEXT, listen=_mtls(files, client_ca="/nonexistent/ca.pem")))
        assert err.path == "listen.tls.client_ca"
        assert "/nonexistent/ca.pem" in err.problem

    @pytest.mark.parametrize("client_auth", ["none"])
    def test_certless_tls_needs_token_rules(self, files: dict[str, pathlib.Path],
                                            client_auth: str) -> None:
        """Without required client certificates, a rule that does not require a token is refused."""
        data = _with(PLAINTEXT, listen=_mtls(files, client_auth=client_auth),
                     authn=_jwt(files), policy={"rules": [TOKEN_RULE, CERT_RULE]})
        err = _error(data)
        assert err.path.startswith("policy.rules[1]")
        assert "token" in err.problem

    @pytest.mark.parametrize("client_auth", ["none"])
    def test_certless_tls_with_token_rules(self, files: dict[str, pathlib.Path],
                                           client_auth: str) -> None:
        """TLS without client certificates is fine when every rule requires a token."""
        rules = [TOKEN_RULE, {**CERT_RULE, "require": ["token"]}]
        cfg = validate_config(_with(PLAINTEXT, listen=_mtls(files, client_auth=client_auth),
                                    authn=_jwt(files), policy={"rules": rules}))
        assert cfg.listen.tls is not None and cfg.listen.tls.client_auth == client_auth

    def test_any_authenticated_on_plaintext_refused(self) -> None:
        """On a plaintext listener an any_authenticated rule must require a token."""
        rule = {"principals": {"any_authenticated": True}, "methods": ["Predict"], "models": ["*"]}
        err = _error(_with(PLAINTEXT, policy={"rules": [rule]}))
        assert err.path.startswith("policy.rules[0]")

    def test_token_rule_without_jwt(self) -> None:
        """A rule on token claims with no authn.jwt configured can never match: refused."""
        err = _error(_with(PLAINTEXT, policy={"rules": [TOKEN_RULE]}))
        assert err.path.startswith("policy.rules[0]") and "authn.jwt" in err.problem


class TestIssuers:
    @pytest.mark.parametrize("alg", ["none", "HS256", "HS512", "es256"])
    def test_refused_algorithms(self, files: dict[str, pathlib.Path], alg: str) -> None:
        """`none`, HMAC and misspelled algorithms are refused in the allowlist."""
        err = _error(_with(PLAINTEXT, authn=_jwt(files, algorithms=["ES256", alg])))
        assert err.path.startswith("authn.jwt.issuers[0].algorithms")
        assert repr(alg) in err.problem

    def test_one_key_source(self, files: dict[str, pathlib.Path]) -> None:
        """Exactly one of jwks_file and public_keys."""
        both = _jwt(files, public_keys=[str(files["issuer.pem"])])
        assert _error(_with(PLAINTEXT, authn=both)).path == "authn.jwt.issuers[0]"
        neither = _jwt(files)
        del neither["jwt"]["issuers"][0]["jwks_file"]
        assert _error(_with(PLAINTEXT, authn=neither)).path == "authn.jwt.issuers[0]"

    def test_missing_key_file(self, files: dict[str, pathlib.Path]) -> None:
        """A public key file that does not exist is named by its index."""
        authn = _jwt(files, jwks_file=None,
                     public_keys=[str(files["issuer.pem"]), "/nonexistent/k.pem"])
        err = _error(_with(PLAINTEXT, authn=authn))
        assert err.path == "authn.jwt.issuers[0].public_keys[1]"
        assert "file not found" in err.problem

    def test_duplicate_issuer(self, files: dict[str, pathlib.Path]) -> None:
        """The same iss twice is refused (the verifier would silently drop one entry's keys)."""
        authn = _jwt(files)
        second = {**authn["jwt"]["issuers"][0], "jwks_file": None,
                  "public_keys": [str(files["issuer.pem"])]}
        authn["jwt"]["issuers"].append(second)
        err = _error(_with(PLAINTEXT, authn=authn))
        assert err.path == "authn.jwt.issuers[1].issuer"

    def test_leeway_bounded(self, files: dict[str, pathlib.Path]) -> None:
        """A leeway over ten minutes is refused."""
        authn = _jwt(files)
        authn["jwt"]["leeway_s"] = 3600
        assert _error(_with(PLAINTEXT, authn=authn)).path == "authn.jwt.leeway_s"


class TestLoadConfig:
    def test_relative_paths_resolve_against_config_dir(
            self, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Relative file paths are taken from the config file's directory, not the cwd."""
        conf = tmp_path / "etc"
        (conf / "tls").mkdir(parents=True)
        for name in ("server.pem", "server.key", "ca.pem"):
            (conf / "tls" / name).write_text("x")
        (tmp_path / "elsewhere").mkdir()
        monkeypatch.chdir(tmp_path / "elsewhere")
        doc = _with(PLAINTEXT, listen={"address": "0.0.0.0:8443", "tls": {
            "cert": "tls/server.pem", "key": "tls/server.key", "client_ca": "tls/ca.pem"}})
        (conf / "tfgate.yaml").write_text(yaml.safe_dump(doc))
        cfg = load_config(conf / "tfgate.yaml")
        assert cfg.listen.tls is not None
        assert cfg.listen.tls.cert == (conf / "tls" / "server.pem").resolve()
        assert cfg.listen.tls.client_ca.is_absolute()  # type: ignore[union-attr]

    def test_relative_audit_file(self, tmp_path: pathlib.Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
        """A relative audit.output file lands beside the config, not in the cwd."""
        monkeypatch.chdir(tmp_path)
        (tmp_path / "etc").mkdir()
        path = tmp_path / "etc" / "tfgate.yaml"
        path.write_text(yaml.safe_dump(_with(PLAINTEXT, audit={"output": "log/audit.jsonl"})))
        assert load_config(path).audit.output == str(tmp_path.resolve() / "etc/log/audit.jsonl")
        path.write_text(yaml.safe_dump(_with(PLAINTEXT, audit={"output": "stderr"})))
        assert load_config(path).audit.output == "stderr"

    def test_relative_path_missing(self, tmp_path: pathlib.Path) -> None:
        """A relative path that is missing beside the config is reported resolved."""
        doc = _with(PLAINTEXT, listen={"address": "0.0.0.0:8443", "tls": {
            "cert": "server.pem", "key": "server.key", "client_ca": "ca.pem"}})
        (tmp_path / "tfgate.yaml").write_text(yaml.safe_dump(doc))
        with pytest.raises(ConfigError) as info:
            load_config(tmp_path / "tfgate.yaml")
        assert info.value.path == "listen.tls.cert"
        assert str(tmp_path.resolve() / "server.pem") in info.value.problem

    def test_yaml_syntax_error(self, tmp_path: pathlib.Path) -> None:
        """Broken YAML names the file and says it is not valid YAML, with the position."""
        path = tmp_path / "bad.yaml"
        path.write_text("listen:\n  address: [127.0.0.1\n")
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert str(path) in str(info.value) and "not valid YAML" in str(info.value)
        assert "line" in str(info.value)

    def test_missing_config_file(self, tmp_path: pathlib.Path) -> None:
        """A config file that does not exist is a ConfigError, not an OSError."""
        with pytest.raises(ConfigError, match="cannot read config"):
            load_config(tmp_path / "absent.yaml")

    def test_empty_document(self, tmp_path: pathlib.Path) -> None:
        """An empty file is not a mapping."""
        path = tmp_path / "empty.yaml"
        path.write_text("")
        with pytest.raises(ConfigError, match="mapping"):
            load_config(path)

    def test_yaml_key_path(self, tmp_path: pathlib.Path) -> None:
        """Errors from a YAML file carry the same key paths as from a dict."""
        path = tmp_path / "c.yaml"
        path.write_text("listen: {address: '127.0.0.1:1', plaintext: true}\n"
                        "upstreams: {x: {address: 'no-port'}}\n")
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert info.value.path == "upstreams.x.address"


class TestAddresses:
    @pytest.mark.parametrize(("address", "parsed"), [
        ("127.0.0.1:8443", ("tcp", "127.0.0.1", 8443)),
        ("[::1]:0", ("tcp", "::1", 0)),
        ("unix:/run/x.sock", ("unix", None, None)),
        ("host.example:65535", ("tcp", "host.example", 65535)),
    ])
    def test_parse(self, address: str, parsed: tuple) -> None:
        """host:port, [v6]:port and unix:PATH parse into kind, host, port."""
        assert parse_address(address) == parsed

    @pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:", ":8443", "h:-1", "h:65536",
                                         "h:port", "unix:"])
    def test_parse_refused(self, address: str) -> None:
        """Addresses without a usable port (or a unix path) are refused."""
        with pytest.raises(ValueError):
            parse_address(address)

    @pytest.mark.parametrize(("address", "loopback"), [
        ("127.0.0.1:1", True), ("[::1]:1", True), ("localhost:1", True), ("unix:/x", True),
        ("0.0.0.0:1", False), ("[::]:1", False), ("10.0.0.1:1", False),
        ("localhost.example.com:1", False), ("127.0.0.1.nip.io:1", False),
    ])
    def test_is_loopback(self, address: str, loopback: bool) -> None:
        """Only loopback IPs, `localhost` and unix sockets count as loopback."""
        assert is_loopback(address) is loopback


class TestIPv6Addresses:
    def test_unbracketed_ipv6_is_refused(self):
        """`::1:8443` is ambiguous and gRPC cannot bind it: ask for brackets."""
        import pytest as _pytest

        from proxy.config import parse_address

        with _pytest.raises(ValueError, match="brackets"):
            parse_address("::1:8443")
        assert parse_address("[::1]:8443") == ("tcp", "::1", 8443)


def test_optional_client_auth_is_refused(files: dict[str, pathlib.Path]) -> None:
    """`optional` is refused: gRPC Python cannot ask for a certificate without requiring
    it, so such a listener would never see one."""
    err = _error(_with(PLAINTEXT, listen=_mtls(files, client_auth="optional")))
    assert err.path == "listen.tls.client_auth"
