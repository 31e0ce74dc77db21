""""Token required" is said once: `authn.jwt.required`, or implied when every rule requires
a token. A certificate-only call is then UNAUTHENTICATED (`token-required`), not
PERMISSION_DENIED, and so is a call whose token fails; both are audited with the
certificate identity that verified. Unit level on a built State, `tfgate explain`, and end
to end with the real tensorflow-serving-api client over mTLS."""

from __future__ import annotations

import copy
import json
import pathlib
import time
from typing import Any

import grpc
import pytest

from proxy import admission
from proxy.admission import Request
from proxy.call import Call, Facts, ModelTarget, Principal
from proxy.config import validate_config
from proxy.errors import Code, Reason, Reject
from proxy.limits import Lease
from proxy.state import build_state
from tests.conftest import AUDIENCE, ISSUER, TEAM_A, base_config, running_proxy
from tests.rawbackend import PREDICT
from tfgate_dev.devpki import mint_claims

HALF = Facts(targets=(ModelTarget("half_plus_two", 1, None, "serving_default"),))


def required_config(pki, signing, upstream: str, *, say_it: bool = True) -> dict[str, Any]:
    """base_config with a token required: said (`authn.jwt.required`) or implied (every
    rule requires a token, nothing said)."""
    config = copy.deepcopy(base_config(pki, signing, upstream))
    if say_it:
        config["authn"]["jwt"]["required"] = True
    else:
        for rule in config["policy"]["rules"]:
            rule["require"] = ["token"]
    return config


def token(signing, **claims) -> str:
    base = mint_claims(issuer=ISSUER, audience=AUDIENCE, subject="svc-1", scope="predict")
    return signing.key.token({**base, **claims})


def expired(signing) -> str:
    now = int(time.time())
    # {"exp": now - 3600, "iat": now - 7200, "nbf": now - 7200, ...}
    return token(signing, exp=now - 3600, iat=now - 7200, nbf=now - 7200)


def bearer(value: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {value}"),)


class TestConfig:
    def test_said(self, pki, signing) -> None:
        cfg = validate_config(required_config(pki, signing, "127.0.0.1:1"))
        assert cfg.authn.jwt.required and cfg.token_required()

    def test_implied_when_every_rule_requires_a_token(self, pki, signing) -> None:
        cfg = validate_config(required_config(pki, signing, "127.0.0.1:1", say_it=False))
        assert not cfg.authn.jwt.required and cfg.token_required()

    def test_not_implied_when_a_rule_takes_certificates_alone(self, pki, signing) -> None:
        assert not validate_config(base_config(pki, signing, "127.0.0.1:1")).token_required()

    def test_not_implied_without_rules(self, pki, signing) -> None:
        """No rule: every call is denied anyway, and nothing says tokens are wanted."""
        config = base_config(pki, signing, "127.0.0.1:1")
        config["policy"]["rules"] = []
        assert not validate_config(config).token_required()

    def test_not_without_jwt(self, pki, signing) -> None:
        config = base_config(pki, signing, "127.0.0.1:1")
        del config["authn"]
        config["policy"]["rules"] = [r for r in config["policy"]["rules"]
                                     if r["name"] != "token-callers"]
        assert not validate_config(config).token_required()


class TestAdmission:
    @pytest.fixture(params=[True, False], ids=["said", "implied"])
    def state(self, request, pki, signing):
        config = required_config(pki, signing, "127.0.0.1:1", say_it=request.param)
        return build_state(validate_config(config), connect=False)

    def _start(self, state, pem, metadata=()) -> tuple[Call, Reject | None]:
        call = Call(PREDICT, "test")
        try:
            admission.start(state, call, Request(PREDICT, metadata, pem), Lease())
        except Reject as refused:
            return call, refused
        return call, None

    def test_certificate_alone_is_unauthenticated(self, state, pki) -> None:
        """A verified certificate without the required token: UNAUTHENTICATED with
        token-required, and the record keeps the certificate identity."""
        call, refused = self._start(state, pki.alice.cert_pem)
        assert refused is not None and refused.reason is Reason.TOKEN_REQUIRED
        assert refused.code is Code.UNAUTHENTICATED
        assert call.principal.spiffe_id == TEAM_A and not call.principal.has_token

    def test_failed_token_keeps_the_certificate_identity(self, state, pki, signing) -> None:
        call, refused = self._start(state, pki.alice.cert_pem, bearer(expired(signing)))
        assert refused is not None and refused.reason is Reason.TOKEN_EXPIRED
        assert call.principal.display() == TEAM_A

    def test_certificate_and_token_pass(self, state, pki, signing) -> None:
        call, refused = self._start(state, pki.alice.cert_pem, bearer(token(signing)))
        assert refused is None and call.principal.has_token
        assert call.principal.display() == f"{TEAM_A} jwt:https://issuer.tfgate.test#svc-1"

    def test_no_credentials_is_still_no_credentials(self, state) -> None:
        call, refused = self._start(state, None)
        assert refused is not None and refused.reason is Reason.NO_CREDENTIALS
        assert call.principal is None

    def test_explain_decides_the_same(self, state) -> None:
        """`admission.decide` (tfgate explain) answers token-required too."""
        alice = Principal(spiffe_id=TEAM_A, has_certificate=True)
        decision = admission.decide(state, alice, PREDICT, HALF)
        assert (decision.allowed, decision.reason) == (False, Reason.TOKEN_REQUIRED)
        with_token = Principal(spiffe_id=TEAM_A, has_certificate=True, issuer=ISSUER,
                               subject="svc-1", scopes=frozenset({"predict"}), has_token=True)
        assert admission.decide(state, with_token, PREDICT, HALF).allowed

    def test_without_requirement_a_certificate_is_enough(self, pki, signing) -> None:
        """The requirement is not invented: base_config lets certificates alone in."""
        state = build_state(validate_config(base_config(pki, signing, "127.0.0.1:1")),
                            connect=False)
        _, refused = self._start(state, pki.alice.cert_pem)
        assert refused is None

    def test_failed_token_audited_with_certificate_without_requirement(
            self, pki, signing) -> None:
        """Independent of the requirement: a bad token beside a good certificate is
        refused, and the refusal knows the certificate."""
        state = build_state(validate_config(base_config(pki, signing, "127.0.0.1:1")),
                            connect=False)
        call, refused = self._start(state, pki.alice.cert_pem, bearer("not.a.jwt"))
        assert refused is not None and refused.reason is Reason.TOKEN_MALFORMED
        assert call.principal.display() == TEAM_A


@pytest.fixture(scope="module")
def apis():
    pytest.importorskip("tensorflow")
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    return predict_pb2, prediction_service_pb2_grpc


@pytest.mark.tf
class TestEndToEnd:
    """The real tensorflow-serving-api client, over mTLS, against the TF backend."""

    @pytest.fixture(params=[True, False], ids=["said", "implied"])
    def served(self, request, pki, signing, backend, tmp_path: pathlib.Path):
        config = required_config(pki, signing, backend.address, say_it=request.param)
        config["audit"] = {"output": str(tmp_path / "audit.jsonl")}
        backend.clear_records()
        with running_proxy(config) as server:
            yield server, tmp_path / "audit.jsonl"

    def _predict(self, apis, pki, server, metadata=()):
        predict_pb2, stubs = apis
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "half_plus_two"
        request.model_spec.version.value = 1
        tensor = request.inputs["x"]
        tensor.dtype = 1  # DT_FLOAT
        tensor.tensor_shape.dim.add(size=1)
        tensor.float_val.append(2.0)
        stub = stubs.PredictionServiceStub(pki.channel(server.address, pki.alice))
        return stub.Predict(request, metadata=list(metadata), timeout=10)

    def _events(self, log: pathlib.Path) -> list[dict[str, Any]]:
        return [json.loads(line) for line in log.read_text().splitlines()]

    @pytest.mark.parametrize("presented", ["none", "expired", "garbage"])
    def test_refused_unauthenticated_with_certificate_in_audit(
            self, apis, pki, signing, backend, served, presented) -> None:
        server, log = served
        metadata = {"none": (), "expired": bearer(expired(signing)),
                    "garbage": bearer("not.a.jwt")}[presented]
        with pytest.raises(grpc.RpcError) as info:
            self._predict(apis, pki, server, metadata)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, info.value.details()
        assert backend.records() == []
        (event,) = self._events(log)
        expected = {"none": "token-required", "expired": "token-expired",
                    "garbage": "token-malformed"}[presented]
        assert (event["reason"], event["status"], event["principal"]) == (
            expected, "UNAUTHENTICATED", TEAM_A)

    def test_certificate_and_valid_token_pass(self, apis, pki, signing, backend,
                                              served) -> None:
        server, log = served
        response = self._predict(apis, pki, server, bearer(token(signing)))
        assert list(response.outputs["y"].float_val) == [3.0]  # version 1: 0.5 * 2 + 2
        assert len(backend.records()) == 1
        (event,) = self._events(log)
        assert event["reason"] == "allowed"
        assert event["principal"] == f"{TEAM_A} jwt:https://issuer.tfgate.test#svc-1"
