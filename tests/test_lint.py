"""Tests for proxy.config.lint: a warning for each way a valid rule can never match or
match more than it reads, and none for rules that say what they mean."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from proxy.config import validate_config
from proxy.config.lint import LintWarning, lint
from tests.conftest import ISSUER, base_config

OTHER_ISSUER = "https://other.tfgate.test"


@pytest.fixture
def doc(pki, signing) -> dict[str, Any]:
    """base_config (mTLS, one issuer) without rules; each test adds the ones it needs."""
    config = copy.deepcopy(base_config(pki, signing, "127.0.0.1:1"))
    config["policy"]["rules"] = []
    return config


def _two_issuers(doc: dict[str, Any]) -> None:
    first = doc["authn"]["jwt"]["issuers"][0]
    doc["authn"]["jwt"]["issuers"].append({**first, "issuer": OTHER_ISSUER})


def _token_only(doc: dict[str, Any]) -> None:
    doc["listen"]["tls"]["client_auth"] = "none"
    del doc["listen"]["tls"]["client_ca"]


def _warnings(doc: dict[str, Any], *rules: dict[str, Any]) -> list[LintWarning]:
    doc = copy.deepcopy(doc)
    doc["policy"]["rules"] += list(rules)
    return lint(validate_config(doc))


def _rule(**fields: Any) -> dict[str, Any]:
    rule = {"name": "r", "principals": {"spiffe": ["spiffe://tfgate.test/a"]},
            "methods": ["Predict"], "models": ["m"]}
    rule.update(fields)
    return rule


def _paths(warnings: list[LintWarning]) -> list[str]:
    return [w.path for w in warnings]


def test_base_config_is_clean(pki, signing) -> None:
    """The tests' production-shaped config says what it means: no warning."""
    assert lint(validate_config(base_config(pki, signing, "127.0.0.1:1"))) == []


class TestIssuers:
    @pytest.mark.parametrize("field", ["sub", "scopes"])
    def test_token_matcher_without_iss_among_several_issuers(self, doc, field) -> None:
        """With two trusted issuers, `scopes: [admin]` accepts either one's token."""
        _two_issuers(doc)
        (warning,) = _warnings(doc, _rule(principals={field: ["admin"]}))
        assert warning.path == f"policy.rules[0].principals.{field}"
        assert "any of the 2 trusted issuers" in warning.message

    @pytest.mark.parametrize("field", ["sub", "scopes"])
    def test_one_issuer_or_iss_given_is_fine(self, doc, field) -> None:
        assert _warnings(doc, _rule(principals={field: ["admin"]})) == []
        _two_issuers(doc)
        assert _warnings(doc, _rule(principals={field: ["admin"], "iss": [ISSUER]})) == []

    def test_iss_matching_no_trusted_issuer(self, doc) -> None:
        (warning,) = _warnings(doc, _rule(principals={"iss": ["https://issuer.tfgate.tst"]}))
        assert warning.path == "policy.rules[0].principals.iss[0]"
        assert "never matches" in warning.message
        assert _warnings(doc, _rule(principals={"iss": ["https://issuer.tfgate.*"]})) == []


class TestSpiffe:
    @pytest.mark.parametrize("pattern", ["tfgate.test/team-a/*", "SPIFFE://tfgate.test/a",
                                         "spiffe:/tfgate.test/a"])
    def test_pattern_without_scheme(self, doc, pattern) -> None:
        (warning,) = _warnings(doc, _rule(principals={"spiffe": [pattern]}))
        assert warning.path == "policy.rules[0].principals.spiffe[0]"
        assert "spiffe://" in warning.message

    def test_capitals_in_trust_domain(self, doc) -> None:
        (warning,) = _warnings(doc, _rule(principals={"spiffe": ["spiffe://TFGate.test/a"]}))
        assert "lowercase" in warning.message

    def test_well_formed_patterns(self, doc) -> None:
        """Capitals in the path are fine: only the trust domain is lowercase."""
        assert _warnings(doc, _rule(principals={"spiffe": [
            "spiffe://tfgate.test/Team-A/**", "spiffe://*.tfgate.test/x"]})) == []


def test_duplicate_rule_names(doc) -> None:
    warnings = _warnings(doc, _rule(name="team"), _rule(name="other"), _rule(name="team"))
    assert _paths(warnings) == ["policy.rules[2].name"]
    assert "rules[0]" in warnings[0].message


class TestWhitespace:
    @pytest.mark.parametrize(("change", "path"), [
        ({"name": "team a"}, "policy.rules[0].name"),
        ({"principals": {"cn": ["team-a "]}}, "policy.rules[0].principals.cn[0]"),
        ({"principals": {"dns": [" a.tfgate.test"]}}, "policy.rules[0].principals.dns[0]"),
        ({"models": ["m", "fraud\t"]}, "policy.rules[0].models[1]"),
        ({"methods": ["/tensorflow.serving.PredictionService/* "]}, "policy.rules[0].methods[0]"),
        ({"signatures": ["serving_default "]}, "policy.rules[0].signatures[0]"),
        ({"versions": [1, "stable "]}, "policy.rules[0].versions[1]"),
    ])
    def test_in_rules(self, doc, change, path) -> None:
        warnings = _warnings(doc, _rule(**change))
        assert path in _paths(warnings) and "whitespace" in warnings[0].message

    def test_in_routes_and_strip_keys(self, doc) -> None:
        doc["routes"] = [{"models": ["fraud *"], "upstream": "serving"}]
        doc["identity"]["strip_metadata"] = ["x-a"]
        assert _paths(_warnings(doc, _rule())) == ["routes[0].models[0]"]


class TestAdminGlobs:
    def test_service_glob_that_leaves_out_reload(self, doc) -> None:
        """`ModelService/*` reads as "all of ModelService" but never grants the reload."""
        (warning,) = _warnings(doc, _rule(methods=["/tensorflow.serving.ModelService/*"]))
        assert warning.path == "policy.rules[0].methods[0]"
        assert "HandleReloadConfigRequest" in warning.message

    def test_everything_glob_names_every_admin_method_left_out(self, doc) -> None:
        (warning,) = _warnings(doc, _rule(methods=["**"]))
        assert "HandleReloadConfigRequest" in warning.message

    def test_glob_with_the_admin_method_named_too(self, doc) -> None:
        assert _warnings(doc, _rule(methods=["/tensorflow.serving.ModelService/*",
                                             "HandleReloadConfigRequest"])) == []

    def test_glob_over_a_service_without_admin_methods(self, doc) -> None:
        assert _warnings(doc, _rule(methods=["/tensorflow.serving.PredictionService/*"])) == []


class TestListener:
    def test_certificate_matchers_on_a_token_only_listener(self, doc) -> None:
        _token_only(doc)
        rule = _rule(principals={"spiffe": ["spiffe://tfgate.test/a"], "iss": [ISSUER]})
        (warning,) = _warnings(doc, rule)
        assert warning.path == "policy.rules[0].principals" and "never matches" in warning.message

    def test_required_certificate_on_a_token_only_listener(self, doc) -> None:
        _token_only(doc)
        (warning,) = _warnings(doc, _rule(principals={"iss": [ISSUER]},
                                          require=["certificate", "token"]))
        assert warning.path == "policy.rules[0].require"

    def test_token_rules_on_a_token_only_listener(self, doc) -> None:
        _token_only(doc)
        assert _warnings(doc, _rule(principals={"iss": [ISSUER]})) == []


class TestTargetsOfMethodsWithoutThem:
    def test_signatures_for_status_and_metadata(self, doc) -> None:
        (warning,) = _warnings(doc, _rule(methods=["GetModelStatus", "GetModelMetadata"],
                                          signatures=["serving_default"]))
        assert warning.path == "policy.rules[0].signatures"
        assert "GetModelMetadata, GetModelStatus" in warning.message

    def test_versions_and_models_for_health(self, doc) -> None:
        rule = _rule(methods=["/grpc.health.v1.Health/*"], versions=[1])
        assert _paths(_warnings(doc, rule)) == ["policy.rules[0].methods[0]",
                                                "policy.rules[0].models",
                                                "policy.rules[0].versions"]


class TestHealthGrants:
    """tfgate answers gRPC Health itself: a rule granting it is never consulted."""

    @pytest.mark.parametrize("pattern", ["/grpc.health.v1.Health/*",
                                         "/grpc.health.v1.Health/Check"])
    def test_a_grant_of_health_alone_is_never_used(self, doc, pattern) -> None:
        (warning,) = _warnings(doc, _rule(methods=["Predict", pattern], models=["*"]))
        assert warning.path == "policy.rules[0].methods[1]"
        assert "tfgate answers itself" in warning.message

    def test_a_glob_spanning_health_and_more_is_not_warned(self, doc) -> None:
        warnings = _warnings(doc, _rule(methods=["/*/*"], models=["*"]))
        assert [w for w in warnings if "Health" in w.message] == []
        assert warnings  # the admin-method warning still fires: the glob did resolve

    def test_targets_for_methods_that_have_them(self, doc) -> None:
        assert _warnings(doc, _rule(methods=["Predict", "GetModelStatus"], versions=[1],
                                    signatures=["serving_default"])) == []
        assert _warnings(doc, _rule(methods=["GetModelStatus"], versions=[1])) == []

    def test_explicit_wildcards_are_not_warned(self, doc) -> None:
        assert _warnings(doc, _rule(methods=["GetModelStatus"], signatures=["*"])) == []
