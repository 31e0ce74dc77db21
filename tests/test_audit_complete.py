"""Audit that is complete and bounded: every refusal records what was known when it came
(the principal parts that verified, the model, version and signature once parsed, even
when a later stage refused), for unary calls and for each message of a client stream; and
every event's reason is one of the closed set, with the status the one table gives it.
Real proxies over real sockets in front of tests/rawbackend.py."""

from __future__ import annotations

import copy
import json
import pathlib
import time
from typing import Any

import grpc
import pytest

from proxy.errors import STATUS, Reason
from proxy.families import Access, Kind, Method, family
from proxy.families.serving import SERVING
from proxy.inspect import serving
from proxy.pb import serving_pb2
from proxy.routing import MethodTable
from tests.conftest import TEAM_A, base_config
from tests.rawbackend import CLIENT_STREAM, PREDICT
from tests.test_e2e_forwarding import predict_bytes, token_metadata

# A client-streaming method whose every message is a PredictRequest: the facts of each
# message are checked before it goes on, like a unary call's.
PREDICT_STREAM = family("serving", (
    Method(CLIENT_STREAM, Access.DATA, Kind.STREAM_UNARY, serving.predict),))


def predict(model: str = "half_plus_two", version: int = 1, *, elements: int = 1,
            signature: str = "") -> bytes:
    request = serving_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.version.value = version
    request.model_spec.signature_name = signature
    tensor = request.inputs["x"]
    tensor.dtype = 1  # DT_FLOAT
    tensor.tensor_shape.dim.add(size=elements)
    tensor.float_val.append(1.0)
    return request.SerializeToString()


def _events(log: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def _refused(call, *args, **kwargs) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, timeout=5, **kwargs)
    return info.value.code()


@pytest.fixture
def audited(pki, signing, raw_backend, tmp_path):
    """(config, audit log): base_config writing its audit events to a file."""
    config = copy.deepcopy(base_config(pki, signing, raw_backend.address))
    config["audit"] = {"output": str(tmp_path / "audit.jsonl")}
    return config, tmp_path / "audit.jsonl"


class TestWhatWasKnown:
    def test_limit_refusal_after_facts_names_the_target(self, pki, make_proxy, raw_backend,
                                                        audited) -> None:
        """Sizes are checked after the facts were authorized: the refusal names them."""
        config, log = audited
        proxy = make_proxy(config)
        call = pki.channel(proxy.address, pki.alice).unary_unary(PREDICT)
        code = _refused(call, predict(elements=10**9, signature="serving_default"))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and raw_backend.received == []
        (event,) = _events(log)
        assert (event["reason"], event["principal"], event["model"], event["version"],
                event["signature"]) == ("limit-exceeded", TEAM_A, "half_plus_two", "1",
                                        "serving_default")

    def test_rate_refusal_names_the_target(self, pki, make_proxy, audited) -> None:
        """The rate is taken at admit, the last stage: the facts are on the record."""
        config, log = audited
        config["limits"] = {"rate": {"rate": 0.001, "burst": 1}}
        proxy = make_proxy(config)
        call = pki.channel(proxy.address, pki.alice).unary_unary(PREDICT)
        call(predict(), timeout=5)
        assert _refused(call, predict(version=2)) == grpc.StatusCode.RESOURCE_EXHAUSTED
        allowed, limited = _events(log)
        assert allowed["reason"] == "allowed"
        assert (limited["reason"], limited["model"], limited["version"]) == (
            "rate-limited", "half_plus_two", "2")

    def test_no_upstream_names_the_model(self, pki, signing, make_proxy, raw_backend,
                                         audited) -> None:
        config, log = audited
        config["upstreams"] = {"a": {"address": raw_backend.address},
                               "b": {"address": raw_backend.address}}
        config["routes"] = [{"models": ["routed-*"], "upstream": "a"}]
        proxy = make_proxy(config)
        call = pki.channel(proxy.address, pki.alice).unary_unary(PREDICT)
        assert _refused(call, predict()) == grpc.StatusCode.NOT_FOUND
        (event,) = _events(log)
        assert (event["reason"], event["model"], event["principal"]) == (
            "no-upstream", "half_plus_two", TEAM_A)

    def test_failed_token_keeps_the_certificate(self, pki, signing, make_proxy,
                                                audited) -> None:
        config, log = audited
        proxy = make_proxy(config)
        call = pki.channel(proxy.address, pki.alice).unary_unary(PREDICT)
        now = int(time.time())
        metadata = token_metadata(signing, exp=now - 60, iat=now - 120, nbf=now - 120)
        assert _refused(call, predict(), metadata=metadata) == grpc.StatusCode.UNAUTHENTICATED
        (event,) = _events(log)
        assert (event["reason"], event["principal"]) == ("token-expired", TEAM_A)


class TestClientStreams:
    @pytest.fixture
    def stream(self, pki, make_proxy, audited):
        config, log = audited
        config["policy"]["rules"].append(
            {"name": "stream", "principals": {"spiffe": [TEAM_A]}, "methods": [CLIENT_STREAM],
             "models": ["half_plus_two"], "versions": [1]})
        proxy = make_proxy(config, methods=MethodTable([SERVING, PREDICT_STREAM]))
        return pki.channel(proxy.address, pki.alice).stream_unary(CLIENT_STREAM), log

    def test_refused_message_is_audited_with_its_own_facts(self, stream, raw_backend) -> None:
        """The second message names a model the caller may not use: the event names that
        model (the facts of the message refused), not the first message's, nor nothing."""
        call, log = stream
        code = _refused(call, iter([predict(), predict("secret", 7)]))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert predict("secret", 7) not in [m for _, m in raw_backend.received]
        (event,) = _events(log)
        assert (event["reason"], event["model"], event["version"], event["messages_in"]) == (
            "model-not-allowed", "secret", "7", 2)

    def test_allowed_stream_is_audited_with_the_last_facts(self, stream) -> None:
        call, log = stream
        assert call(iter([predict(), predict(signature="other")]), timeout=5)
        (event,) = _events(log)
        assert (event["reason"], event["model"], event["signature"]) == (
            "allowed", "half_plus_two", "other")


class TestClosedSet:
    def test_every_event_has_a_known_reason_and_its_status(self, pki, signing, make_proxy,
                                                           raw_backend, audited) -> None:
        """A spread of outcomes; each event's reason is a Reason value, its status the
        one STATUS gives that reason, and a detail exactly when the call did not end OK."""
        config, log = audited
        proxy = make_proxy(config)
        alice = pki.channel(proxy.address, pki.alice)
        nobody = pki.channel(proxy.address, pki.cn_client)
        alice.unary_unary(PREDICT)(predict(), timeout=5)
        now = int(time.time())
        attempts = [
            (nobody.unary_unary(PREDICT), predict(), {}),
            (alice.unary_unary(PREDICT), predict("secret"), {}),
            (alice.unary_unary(PREDICT), predict(version=9), {}),
            (alice.unary_unary(PREDICT), b"\xff\xff not protobuf", {}),
            (alice.unary_unary("/no.Such/Method"), b"", {}),
            (alice.unary_unary("/tensorflow.ProfilerService/Profile"), b"", {}),
            (alice.unary_unary(PREDICT), predict_bytes("half_plus_two", 1),
             {"metadata": token_metadata(signing, exp=now - 60, iat=now - 120,
                                         nbf=now - 120)}),
            (alice.unary_unary(PREDICT), predict(elements=10**9), {}),
        ]
        for call, body, kwargs in attempts:
            _refused(call, body, **kwargs)
        events = _events(log)
        assert len(events) == 1 + len(attempts)
        known = {r.value: r for r in Reason}
        for event in events:
            reason = known[event["reason"]]  # KeyError: a reason outside the set
            assert event["status"] == STATUS[reason][0].name, event
            assert ("detail" in event) == (event["status"] != "OK"), event
            assert event["decision"] == ("allow" if reason.forwarded else "deny")
        assert [e["reason"] for e in events] == [
            "allowed", "no-rule-for-principal", "model-not-allowed", "version-not-allowed",
            "malformed-request", "unknown-method", "method-always-denied", "token-expired",
            "limit-exceeded"]
        assert all(e["principal"] is not None for e in events)
