"""The shadow policy: decided beside the enforced one on real calls, never enforced;
every difference is one log line, one count and a `shadow` field in the audit event;
`tfgate explain` shows it too."""

from __future__ import annotations

import argparse
import json
import logging

import grpc
import pytest

from proxy import metrics
from proxy.config import validate_config
from proxy.errors import ConfigError
from proxy.explain import explain
from tests.conftest import ISSUER
from tests.obs_helpers import PREDICT, plaintext_config, predict, served, token

# The enforced policy (plaintext_config): scope `predict` may call Predict on half_plus_two
# and fraud-*. The shadow, a tightening under trial: only fraud-* and only scope `predict`;
# and a loosening: scope `trial` may call Predict on any model.
SHADOW = {"rules": [
    {"name": "fraud-only", "principals": {"iss": [ISSUER], "scopes": ["predict"]},
     "methods": ["Predict"], "models": ["fraud-*"]},
    {"name": "trial", "principals": {"iss": [ISSUER], "scopes": ["trial"]},
     "methods": ["Predict"], "models": ["*"]},
]}


def _differences(enforced: str, shadow: str) -> float:
    return metrics.REGISTRY.get_sample_value("tfgate_shadow_differences_total", {
        "method": PREDICT, "enforced": enforced, "shadow": shadow}) or 0.0


def _audit(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]


@pytest.fixture
def config(signing, raw_backend, tmp_path):
    return plaintext_config(signing, raw_backend.address, tmp_path, shadow_policy=SHADOW)


class TestServed:
    def test_differences_are_logged_counted_and_audited(self, config, signing, raw_backend,
                                                        tmp_path, caplog) -> None:
        before = {(e, s): _differences(e, s) for e, s in (("allow", "deny"), ("deny", "allow"))}
        caplog.set_level(logging.INFO, logger="tfgate.shadow")
        with served(config) as service:
            with grpc.insecure_channel(service.address) as channel:
                call = channel.unary_unary(PREDICT)
                # enforced allows, the shadow would refuse: the call still goes through
                assert call(predict("half_plus_two"), metadata=token(signing), timeout=10)
                # both allow: no difference
                assert call(predict("fraud-eu"), metadata=token(signing), timeout=10)
                # enforced refuses (no rule for the scope), the shadow would allow
                with pytest.raises(grpc.RpcError) as refused:
                    call(predict("half_plus_two"), metadata=token(signing, scope="trial"),
                         timeout=10)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert len(raw_backend.received) == 2  # the shadow changed nothing
        assert _differences("allow", "deny") == before[("allow", "deny")] + 1
        assert _differences("deny", "allow") == before[("deny", "allow")] + 1

        events = _audit(tmp_path)
        assert [e.get("shadow") for e in events] == [
            {"decision": "deny", "reason": "model-not-allowed", "rule": None},
            None,
            {"decision": "allow", "reason": "allowed", "rule": "trial"},
        ]
        assert [e["decision"] for e in events] == ["allow", "allow", "deny"]
        lines = [r.getMessage() for r in caplog.records if r.name == "tfgate.shadow"]
        assert lines == [
            f"shadow policy differs on {PREDICT} for jwt:{ISSUER}#job: enforced allow "
            "(rule predict), shadow deny (model-not-allowed)",
            f"shadow policy differs on {PREDICT} for jwt:{ISSUER}#job: enforced deny, "
            "shadow allow (rule trial)",
        ]

    def test_calls_refused_before_the_policy_have_no_shadow(self, config, raw_backend,
                                                            tmp_path) -> None:
        with served(config) as service:
            with grpc.insecure_channel(service.address) as channel:
                with pytest.raises(grpc.RpcError):
                    channel.unary_unary(PREDICT)(predict("half_plus_two"), timeout=10)
        (event,) = _audit(tmp_path)
        assert event["reason"] == "no-credentials" and "shadow" not in event


class TestConfig:
    def test_shadow_rules_meet_the_same_checks(self, signing, tmp_path) -> None:
        config = plaintext_config(signing, "127.0.0.1:1", tmp_path, shadow_policy={"rules": [
            {"principals": {"spiffe": ["spiffe://x/y"]}, "methods": ["Predict"],
             "models": ["*"]}]})
        with pytest.raises(ConfigError) as err:
            validate_config(config)
        assert err.value.path == "shadow_policy.rules[0].require"

    def test_unknown_methods_in_shadow_rules_are_config_errors(self, signing, tmp_path) -> None:
        from proxy.state import build_state

        config = plaintext_config(signing, "127.0.0.1:1", tmp_path, shadow_policy={"rules": [
            {"principals": {"iss": [ISSUER]}, "methods": ["Nope"], "models": ["*"]}]})
        with pytest.raises(ConfigError) as err:
            build_state(validate_config(config), connect=False)
        assert err.value.path == "shadow_policy.rules[0].methods[0]"


def _args(**given) -> argparse.Namespace:
    fields = dict(method="Predict", model="half_plus_two", version=None, label=None,
                  signature="", spiffe=None, dns=[], cn=None, sub="job", iss=ISSUER,
                  scope=["predict"])
    return argparse.Namespace(**{**fields, **given})


class TestExplain:
    def test_explain_shows_a_differing_shadow(self, config) -> None:
        decision, text = explain(validate_config(config), _args())
        assert decision.allowed
        assert text.splitlines()[-1] == (
            '  shadow: DENY (model-not-allowed: model "half_plus_two" is not allowed for this '
            "caller) (differs)")

    def test_explain_shows_an_agreeing_shadow(self, config) -> None:
        _, text = explain(validate_config(config), _args(model="fraud-eu"))
        assert text.splitlines()[-1] == "  shadow: ALLOW (rule: fraud-only)"

    def test_no_shadow_line_without_a_shadow_policy(self, signing, tmp_path) -> None:
        _, text = explain(validate_config(plaintext_config(signing, "127.0.0.1:1", tmp_path)),
                          _args())
        assert "shadow" not in text
