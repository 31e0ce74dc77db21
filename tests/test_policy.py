"""Tests for proxy.policy: default deny, every ACL dimension, and which reason a denial names."""

from __future__ import annotations

from typing import Any

import pytest

from proxy import config
from proxy.call import DEFAULT_SIGNATURE, Facts, ModelTarget, Principal
from proxy.errors import ConfigError, Reason
from proxy.families.serving import SERVING
from proxy.policy import Decision, Policy
from proxy.routing import MethodTable

PREDICT = "/tensorflow.serving.PredictionService/Predict"
CLASSIFY = "/tensorflow.serving.PredictionService/Classify"
MULTI = "/tensorflow.serving.PredictionService/MultiInference"
METADATA = "/tensorflow.serving.PredictionService/GetModelMetadata"
STATUS = "/tensorflow.serving.ModelService/GetModelStatus"
RELOAD = "/tensorflow.serving.ModelService/HandleReloadConfigRequest"
HEALTH = "/grpc.health.v1.Health/Check"

ALICE_SPIFFE = "spiffe://example.org/ns/prod/sa/alice"
ALICE = Principal(spiffe_id=ALICE_SPIFFE, dns=("alice.example.org", "a.internal"), cn="alice",
                  has_certificate=True)
TOKEN_BOB = Principal(subject="bob", issuer="https://issuer.example",
                      scopes=frozenset({"predict", "read"}), has_token=True)
BOTH = ALICE.merged(TOKEN_BOB)
DEFAULT = ModelTarget("mnist", signature=DEFAULT_SIGNATURE)


TABLE = MethodTable([SERVING])


class _Policy(Policy):
    """The policy, with calls described by their targets alone (the only facts it reads
    for TF Serving methods)."""

    def decide(self, principal: Principal, method: str, targets: Any) -> Decision:  # type: ignore[override]
        return super().decide(principal, method, Facts(targets=tuple(targets)))


def _policy(*rules: dict[str, Any]) -> _Policy:
    return _Policy(config.Policy.model_validate({"rules": list(rules)}), TABLE)


def _rule(principals: dict[str, Any] | None = None, **grant: Any) -> dict[str, Any]:
    return {"principals": principals or {"any_authenticated": True},
            "methods": ["Predict"], "models": ["*"], **grant}


def _target(name: str = "mnist", version: int | None = None, label: str | None = None,
            signature: str | None = DEFAULT_SIGNATURE) -> ModelTarget:
    return ModelTarget(name, version, label, signature)


class TestDefaultDeny:
    def test_no_rules(self) -> None:
        """With no rules nothing is allowed."""
        decision = _policy().decide(ALICE, PREDICT, (DEFAULT,))
        assert not decision.allowed and decision.reason is Reason.NO_MATCHING_RULE
        assert decision.rule is None

    def test_allowed_names_rule(self) -> None:
        """An allowed call carries the name of the granting rule."""
        decision = _policy(_rule(name="everyone")).decide(ALICE, PREDICT, (DEFAULT,))
        assert decision.allowed and decision.reason is Reason.ALLOWED
        assert decision.rule == "everyone"

    def test_unnamed_rule_gets_index(self) -> None:
        """A rule without a name is reported by its index."""
        policy = _policy(_rule({"cn": ["nobody"]}), _rule())
        assert policy.decide(ALICE, PREDICT, (DEFAULT,)).rule == "rules[1]"


class TestPrincipals:
    @pytest.mark.parametrize(("principals", "allowed"), [
        ({"spiffe": [ALICE_SPIFFE]}, True),
        ({"spiffe": ["spiffe://example.org/ns/prod/**"]}, True),
        ({"spiffe": ["spiffe://example.org/ns/prod/*"]}, False),   # * is one segment
        ({"spiffe": ["spiffe://example.org/ns/prod/sa/*"]}, True),
        ({"spiffe": ["spiffe://example.org/ns/dev/*"]}, False),
        ({"spiffe": ["SPIFFE://example.org/ns/prod/sa/alice"]}, False),
        ({"dns": ["a.internal"]}, True),
        ({"dns": ["*.example.org"]}, True),
        ({"dns": ["bob.example.org"]}, False),
        ({"cn": ["alice"]}, True),
        ({"cn": ["Alice"]}, False),
        ({"cn": ["ali"]}, False),
        ({"cn": ["alice"], "spiffe": ["spiffe://other/*"]}, False),
        ({"cn": ["bob", "alice"]}, True),
    ])
    def test_certificate_matchers(self, principals: dict, allowed: bool) -> None:
        """Certificate globs are case-sensitive, full-string, ANDed across fields, ORed within."""
        decision = _policy(_rule(principals)).decide(ALICE, PREDICT, (DEFAULT,))
        assert decision.allowed is allowed
        if not allowed:
            assert decision.reason is Reason.NO_MATCHING_RULE

    @pytest.mark.parametrize(("principals", "allowed"), [
        ({"sub": ["bob"]}, True),
        ({"sub": ["b*"]}, True),
        ({"sub": ["alice"]}, False),
        ({"iss": ["https://issuer.example"]}, True),
        ({"iss": ["https://evil.example"]}, False),
        ({"scopes": ["admin", "predict"]}, True),
        ({"scopes": ["admin"]}, False),
        ({"scopes": ["pred*"]}, False),
        ({"sub": ["bob"], "scopes": ["admin"]}, False),
    ])
    def test_token_matchers(self, principals: dict, allowed: bool) -> None:
        """sub/iss are globs, scopes are exact values of which any one suffices."""
        decision = _policy(_rule(principals)).decide(TOKEN_BOB, PREDICT, (DEFAULT,))
        assert decision.allowed is allowed

    def test_certificate_matcher_never_matches_token_caller(self) -> None:
        """A caller without a certificate has no CN, so a CN glob `*` does not match it."""
        decision = _policy(_rule({"cn": ["*"]})).decide(TOKEN_BOB, PREDICT, (DEFAULT,))
        assert decision.reason is Reason.NO_MATCHING_RULE

    def test_token_matcher_never_matches_cert_caller(self) -> None:
        """A caller without a token has no subject, so a sub glob `*` does not match it."""
        decision = _policy(_rule({"sub": ["*"]})).decide(ALICE, PREDICT, (DEFAULT,))
        assert decision.reason is Reason.NO_MATCHING_RULE

    def test_mixed_principal_needs_both(self) -> None:
        """A rule naming both certificate and token identities needs a caller with both."""
        policy = _policy(_rule({"spiffe": [ALICE_SPIFFE], "sub": ["bob"]}))
        assert policy.decide(BOTH, PREDICT, (DEFAULT,)).allowed
        assert not policy.decide(ALICE, PREDICT, (DEFAULT,)).allowed
        assert not policy.decide(TOKEN_BOB, PREDICT, (DEFAULT,)).allowed


class TestRequire:
    @pytest.mark.parametrize(("require", "caller", "allowed"), [
        (["certificate"], ALICE, True),
        (["certificate"], TOKEN_BOB, False),
        (["token"], TOKEN_BOB, True),
        (["token"], ALICE, False),
        (["certificate", "token"], BOTH, True),
        (["certificate", "token"], ALICE, False),
        (["certificate", "token"], TOKEN_BOB, False),
        ([], ALICE, True),
        ([], TOKEN_BOB, True),
    ])
    def test_identity_proofs(self, require: list[str], caller: Principal, allowed: bool) -> None:
        """`require` demands a certificate, a token or both, whatever the principal matchers say."""
        decision = _policy(_rule(require=require)).decide(caller, PREDICT, (DEFAULT,))
        assert decision.allowed is allowed
        if not allowed:
            assert decision.reason is Reason.IDENTITY_REQUIREMENT
            assert "identity proof" in decision.message

    def test_token_scopes_with_certificate_required(self) -> None:
        """A scope rule that also requires a certificate refuses a token-only caller."""
        policy = _policy(_rule({"scopes": ["predict"]}, require=["certificate"]))
        assert policy.decide(TOKEN_BOB, PREDICT, (DEFAULT,)).reason is (
            Reason.IDENTITY_REQUIREMENT)
        assert policy.decide(BOTH, PREDICT, (DEFAULT,)).allowed


class TestMethods:
    def test_method_not_granted(self) -> None:
        """A caller with a rule for Predict may not Classify."""
        decision = _policy(_rule()).decide(ALICE, CLASSIFY, (DEFAULT,))
        assert decision.reason is Reason.METHOD_NOT_ALLOWED
        assert CLASSIFY in decision.message

    @pytest.mark.parametrize("pattern", ["Predict", "PredictionService/Predict", PREDICT,
                                         "/tensorflow.serving.PredictionService/Pred*"])
    def test_method_spellings(self, pattern: str) -> None:
        """Short names, Service/Method, full paths and globs over full paths all grant Predict."""
        policy = _policy(_rule(methods=[pattern]))
        assert policy.decide(ALICE, PREDICT, (DEFAULT,)).allowed

    def test_infra_method_without_models(self) -> None:
        """A health rule needs no models and grants a call with no targets."""
        policy = _policy(_rule(methods=["Check"], models=[]))
        assert policy.decide(ALICE, HEALTH, ()).allowed
        assert policy.decide(ALICE, PREDICT, (DEFAULT,)).reason is Reason.METHOD_NOT_ALLOWED

    @pytest.mark.parametrize("pattern", ["**", "/**", "/tensorflow.serving.ModelService/*",
                                         "/tensorflow.serving.*/*"])
    def test_glob_never_grants_admin(self, pattern: str) -> None:
        """HandleReloadConfigRequest is granted only when named, never by a glob."""
        policy = _policy(_rule(methods=[pattern]))
        assert policy.decide(ALICE, RELOAD, ()).reason is Reason.METHOD_NOT_ALLOWED

    @pytest.mark.parametrize("name", ["HandleReloadConfigRequest",
                                      "ModelService/HandleReloadConfigRequest", RELOAD])
    def test_admin_named(self, name: str) -> None:
        """Naming the admin method exactly grants it."""
        assert _policy(_rule(methods=[name])).decide(ALICE, RELOAD, ()).allowed

    def test_star_grants_all_but_admin(self) -> None:
        """`**` grants every data, metadata and infra method (`*` stays within a segment)."""
        policy = _policy(_rule(methods=["**"]))
        for method in (PREDICT, CLASSIFY, METADATA, STATUS):
            target = _target(signature=None) if method in (METADATA, STATUS) else DEFAULT
            assert policy.decide(ALICE, method, (target,)).allowed, method
        assert policy.decide(ALICE, HEALTH, ()).allowed


class TestMethodPatternsAtConfigTime:
    @pytest.mark.parametrize("pattern", [
        "/tensorflow.ProfilerService/Profile", "/tensorflow.ProfilerService/*",
        "/tensorflow.serving.SessionService/SessionRun", "SessionService/SessionRun",
        "SessionRun*SessionService", "*ProfilerService*",
    ])
    def test_always_denied_refused(self, pattern: str) -> None:
        """Profiler and SessionService patterns cannot be granted: the config is refused."""
        rules = [_rule(), _rule(methods=["Predict", pattern])]
        with pytest.raises(ConfigError) as info:
            _policy(*rules)
        assert info.value.path == "policy.rules[1].methods[1]"
        assert "always denied" in info.value.problem

    @pytest.mark.parametrize("pattern", ["predict", "Predict*", "/tensorflow.serving.Nope/*",
                                         "Predict ",
                                         "/tensorflow.serving.predictionservice/Predict",
                                         "/tensorflow.serving.ModelService/HandleReload*",
                                         "*Reload*"])
    def test_pattern_matching_nothing_refused(self, pattern: str) -> None:
        """A method entry that names no known method (a typo) is refused with its key path."""
        with pytest.raises(ConfigError) as info:
            _policy(_rule(), _rule(), _rule(methods=["Classify", "Regress", pattern]))
        assert info.value.path == "policy.rules[2].methods[2]"
        assert "matches no known method" in info.value.problem

    def test_models_required_for_model_methods(self) -> None:
        """A rule granting a model method without models is refused, naming models."""
        with pytest.raises(ConfigError) as info:
            _policy(_rule(models=[]))
        assert info.value.path == "policy.rules[0].models"


class TestModels:
    @pytest.mark.parametrize(("models", "name", "allowed"), [
        (["mnist"], "mnist", True),
        (["mnist"], "mnist2", False),
        (["mnist"], "MNIST", False),
        (["team-a/*"], "team-a/x", True),
        (["team-a-*"], "team-b-x", False),
        (["m?ist"], "mnist", True),
        (["[ab]*"], "bert", True),
        (["[ab]*"], "cnn", False),
    ])
    def test_model_globs(self, models: list[str], name: str, allowed: bool) -> None:
        """Model globs are full-string and case-sensitive."""
        decision = _policy(_rule(models=models)).decide(ALICE, PREDICT, (_target(name),))
        assert decision.allowed is allowed
        if not allowed:
            assert decision.reason is Reason.MODEL_NOT_ALLOWED
            assert f'"{name}"' in decision.message


class TestVersions:
    @pytest.mark.parametrize(("versions", "target", "allowed"), [
        ([1, 2], _target(version=2), True),
        ([1, 2], _target(version=3), False),
        ([0], _target(version=0), True),
        ([1], _target(), False),
        (["latest"], _target(), True),
        (["latest"], _target(version=7), False),
        (["stable"], _target(label="stable"), True),
        (["stable"], _target(label="canary"), False),
        (["stable"], _target(), False),
        ([1], _target(label="1"), False),
        (["1"], _target(version=1), False),
        (["*"], _target(version=99), True),
        (["*"], _target(label="canary"), True),
        (["*"], _target(), True),
    ])
    def test_versions(self, versions: list, target: ModelTarget, allowed: bool) -> None:
        """Numbers match versions, labels match labels, latest matches no version, * matches all."""
        decision = _policy(_rule(versions=versions)).decide(ALICE, PREDICT, (target,))
        assert decision.allowed is allowed
        if not allowed:
            assert decision.reason is Reason.VERSION_NOT_ALLOWED
            assert target.version_text() in decision.message


class TestSignatures:
    @pytest.mark.parametrize(("signatures", "signature", "allowed"), [
        (["serving_default"], DEFAULT_SIGNATURE, True),
        (["classify"], DEFAULT_SIGNATURE, False),
        (["classify"], "classify", True),
        (["classify"], "Classify", False),
        (["*"], "anything", True),
    ])
    def test_signatures(self, signatures: list[str], signature: str, allowed: bool) -> None:
        """Signature names are exact; the inspected empty name arrives as serving_default."""
        target = _target(signature=signature)
        decision = _policy(_rule(signatures=signatures)).decide(ALICE, PREDICT, (target,))
        assert decision.allowed is allowed
        if not allowed:
            assert decision.reason is Reason.SIGNATURE_NOT_ALLOWED
            assert f'"{signature}"' in decision.message

    def test_no_signature_for_metadata(self) -> None:
        """Metadata methods have no signature, so a signature list does not block them."""
        policy = _policy(_rule(methods=["GetModelMetadata"], signatures=["classify"]))
        assert policy.decide(ALICE, METADATA, (_target(signature=None),)).allowed


class TestMultiInference:
    def test_one_forbidden_task(self) -> None:
        """Every task must be granted: one forbidden signature denies the whole call."""
        policy = _policy(_rule(methods=["MultiInference"], signatures=["classify"]))
        ok = _target(signature="classify")
        bad = _target(signature="secret")
        assert policy.decide(ALICE, MULTI, (ok, ok)).allowed
        decision = policy.decide(ALICE, MULTI, (ok, bad))
        assert decision.reason is Reason.SIGNATURE_NOT_ALLOWED
        assert '"secret"' in decision.message

    def test_tasks_granted_by_different_rules(self) -> None:
        """Tasks may be granted by different rules; the decision names them all."""
        policy = _policy(
            _rule(name="cls", methods=["MultiInference"], signatures=["classify"]),
            _rule(name="reg", methods=["MultiInference"], signatures=["regress"]))
        decision = policy.decide(ALICE, MULTI, (_target(signature="classify"),
                                                _target(signature="regress")))
        assert decision.allowed and decision.rule == "cls,reg"


class TestReasonChoice:
    def test_furthest_check_wins(self) -> None:
        """With one rule failing on the model and one on the version, the version is reported."""
        policy = _policy(_rule(models=["other"]), _rule(models=["mnist"], versions=[1]))
        decision = policy.decide(ALICE, PREDICT, (_target(version=2),))
        assert decision.reason is Reason.VERSION_NOT_ALLOWED

    def test_signature_beats_model(self) -> None:
        """A rule that gets as far as the signature is the one reported."""
        policy = _policy(_rule(models=["mnist"], signatures=["x"]), _rule(models=["other"]))
        decision = policy.decide(ALICE, PREDICT, (DEFAULT,))
        assert decision.reason is Reason.SIGNATURE_NOT_ALLOWED

    def test_method_beats_identity(self) -> None:
        """A rule whose proofs are met but lacks the method outranks one whose proofs are not."""
        policy = _policy(_rule(methods=["Classify"]), _rule(require=["token"]))
        assert policy.decide(ALICE, PREDICT, (DEFAULT,)).reason is Reason.METHOD_NOT_ALLOWED

    def test_identity_beats_no_rule(self) -> None:
        """A principal matched only by rules whose proofs are missing gets identity-requirement."""
        policy = _policy(_rule({"cn": ["nobody"]}), _rule(require=["token"]))
        assert policy.decide(ALICE, PREDICT, (DEFAULT,)).reason is Reason.IDENTITY_REQUIREMENT

    def test_rules_of_other_principals_ignored(self) -> None:
        """A rule for someone else never contributes a reason."""
        policy = _policy(_rule({"cn": ["bob"]}, models=["mnist"], signatures=["x"]))
        assert policy.decide(ALICE, PREDICT, (DEFAULT,)).reason is Reason.NO_MATCHING_RULE

    def test_later_rule_grants(self) -> None:
        """A denial by one rule does not stop a later rule from granting."""
        policy = _policy(_rule(models=["other"]), _rule(models=["mnist"]))
        assert policy.decide(ALICE, PREDICT, (DEFAULT,)).allowed


class TestReviewFindings:
    """Edge cases found in review of the rule compiler."""

    def _policy(self, **rule):
        base = {"principals": {"cn": ["c"]}, "methods": ["Predict"], "models": ["m"]}
        return _policy({**base, **rule})

    def test_latest_keyword_does_not_match_a_label_named_latest(self):
        """`versions: [latest]` grants requests without a version, not the label "latest"."""
        from proxy.call import ModelTarget, Principal

        policy = self._policy(versions=["latest"])
        who = Principal(cn="c", has_certificate=True)
        path = "/tensorflow.serving.PredictionService/Predict"
        assert policy.decide(who, path, (ModelTarget("m", signature="serving_default"),)).allowed
        label = ModelTarget("m", label="latest", signature="serving_default")
        assert not policy.decide(who, path, (label,)).allowed

    def test_empty_signature_in_rule_means_serving_default(self):
        """A rule listing "" grants serving_default, as an empty request signature means."""
        from proxy.call import ModelTarget, Principal

        policy = self._policy(signatures=[""])
        who = Principal(cn="c", has_certificate=True)
        target = ModelTarget("m", signature="serving_default")
        assert policy.decide(who, "/tensorflow.serving.PredictionService/Predict",
                             (target,)).allowed
