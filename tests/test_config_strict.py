"""Config that cannot silently widen: a key given twice is an error at every level (YAML
would keep the last), and every error a document has is reported, not the first."""

from __future__ import annotations

import pathlib
import textwrap

import pytest
import yaml

from proxy.config import ConfigError, ConfigErrors, load_config, validate_config
from proxy.config.strict_yaml import DuplicateKeys, StrictLoader
from proxy.state import build_state

PLAIN = """\
listen: {address: 127.0.0.1:0, plaintext: true}
upstreams: {serving: {address: 127.0.0.1:8500}}
"""


@pytest.fixture
def mtls(pki) -> str:
    """PLAIN with an mTLS listener instead (rules with certificate matchers need one),
    three lines long like PLAIN."""
    return (f"listen: {{address: 127.0.0.1:0, tls: {{cert: {pki.server.cert_path}, "
            f"key: {pki.server.key_path}, client_ca: {pki.ca.ca.cert_path}}}}}\n"
            "upstreams: {serving: {address: 127.0.0.1:8500}}\n")
RULE = """\
    - name: team-a
      principals: {cn: [team-a]}
      methods: [Predict]
      models: [fraud]
"""


def _load(tmp_path: pathlib.Path, text: str):
    path = tmp_path / "tfgate.yaml"
    path.write_text(textwrap.dedent(text))
    return load_config(path)


def _errors(exc: ConfigError) -> list[str]:
    return [str(e) for e in (exc.errors if isinstance(exc, ConfigErrors) else (exc,))]


class TestDuplicateKeys:
    def test_second_policy_block_is_an_error(self, tmp_path: pathlib.Path, mtls) -> None:
        """The headline: a second `policy:` would replace the first and grant more."""
        text = mtls + "policy:\n  rules:\n" + RULE + "policy:\n  rules:\n" + RULE.replace(
            "[fraud]", '["*"]')
        assert yaml.safe_load(text)["policy"]["rules"][0]["models"] == ["*"]  # what YAML does
        with pytest.raises(ConfigError) as info:
            _load(tmp_path, text)
        assert info.value.path == "policy"
        assert "duplicate key on line 9 (first given on line 3)" in info.value.problem

    @pytest.mark.parametrize(("text", "path"), [
        (PLAIN + "policy:\n  rules:\n" + RULE + "      models: ['*']\n",
         "policy.rules[0].models"),
        (PLAIN.replace("plaintext: true}", "plaintext: true, address: 0.0.0.0:1}"),
         "listen.address"),
        (PLAIN + "upstreams: {other: {address: 127.0.0.1:1}}\n", "upstreams"),
        (PLAIN + "policy:\n  rules:\n" + RULE.replace(
            "{cn: [team-a]}", "{cn: [team-a], cn: ['*']}"), "policy.rules[0].principals.cn"),
    ])
    def test_at_every_level(self, tmp_path: pathlib.Path, text: str, path: str) -> None:
        with pytest.raises(ConfigError) as info:
            _load(tmp_path, text)
        assert info.value.path == path and "duplicate key" in info.value.problem

    def test_every_duplicate_is_reported(self, tmp_path: pathlib.Path) -> None:
        text = PLAIN + "audit: {output: stdout}\naudit: {output: stderr}\n" + (
            "server: {grace_s: 1, grace_s: 2}\n")
        with pytest.raises(ConfigErrors) as info:
            _load(tmp_path, text)
        assert [e.path for e in info.value.errors] == ["audit", "server.grace_s"]
        assert "line 4" in info.value.errors[0].problem

    def test_keys_compare_as_values(self) -> None:
        """`1` and `0x1` are one key; `1` and `"1"` two (as the mapping holds them)."""
        with pytest.raises(DuplicateKeys):
            yaml.load("{1: a, 0x1: b}", Loader=StrictLoader)
        assert yaml.load("{1: a, '1': b}", Loader=StrictLoader) == {1: "a", "1": "b"}

    def test_aliases_and_merge_keys_are_not_duplicates(self) -> None:
        """An alias used twice is one node, not a repeated key; `<<` merges follow YAML."""
        text = "base: &b {k: 1, j: 2}\nx: *b\ny: *b\nz: {<<: *b, k: 3}\n"
        loaded = yaml.load(text, Loader=StrictLoader)
        assert loaded["z"] == {"k": 3, "j": 2} and loaded["x"] == loaded["y"]

    def test_recursive_anchor_terminates(self) -> None:
        loaded = yaml.load("a: &a [*a]\n", Loader=StrictLoader)
        assert loaded["a"][0] is loaded["a"]

    def test_valid_document_loads(self, tmp_path: pathlib.Path, mtls) -> None:
        cfg = _load(tmp_path, mtls + "policy:\n  rules:\n" + RULE)
        assert cfg.policy.rules[0].models == ["fraud"]


class TestEveryError:
    def test_every_schema_error_is_reported(self) -> None:
        """Three bad keys in three sections: all three, each with its key path."""
        doc = yaml.safe_load(PLAIN)
        doc["upstreams"]["serving"]["address"] = "nope"
        doc["bogus"] = 1
        doc["server"] = {"grace_s": -1}
        with pytest.raises(ConfigErrors) as info:
            validate_config(doc)
        assert sorted(e.path for e in info.value.errors) == [
            "bogus", "server.grace_s", "upstreams.serving.address"]
        assert str(info.value).count("\n") == 2  # one line each

    def test_one_error_is_a_plain_config_error(self) -> None:
        doc = yaml.safe_load(PLAIN)
        doc["bogus"] = 1
        with pytest.raises(ConfigError) as info:
            validate_config(doc)
        assert type(info.value) is ConfigError and str(info.value).startswith("bogus: ")

    def test_many_errors_read_as_the_first_for_single_error_code(self) -> None:
        """ConfigErrors is a ConfigError: path and problem are the first error's."""
        errors = ConfigErrors([ConfigError("a", "one"), ConfigError("b.c", "two")])
        assert (errors.path, errors.problem) == ("a", "one")
        assert str(errors) == "a: one\nb.c: two"
        with pytest.raises(ValueError):
            ConfigErrors([])

    def test_every_policy_compile_error_is_reported(self, mtls) -> None:
        """Errors found compiling rules (methods that match nothing, missing models) are
        collected across rules and within a rule's methods."""
        doc = yaml.safe_load(mtls)
        doc["policy"] = {"rules": [
            {"principals": {"cn": ["a"]}, "methods": ["Predcit", "Clasify"], "models": ["m"]},
            {"principals": {"cn": ["b"]}, "methods": ["Predict"]},
        ]}
        with pytest.raises(ConfigErrors) as info:
            build_state(validate_config(doc), connect=False)
        assert [e.path for e in info.value.errors] == [
            "policy.rules[0].methods[0]", "policy.rules[0].methods[1]", "policy.rules[1].models"]
