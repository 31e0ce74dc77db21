"""Tests for proxy.admission: its stages in order over a built State with no transport, and,
end to end through the gRPC front, that an unexpected exception in any stage becomes
INTERNAL, is audited as internal-error, and is never forwarded."""

from __future__ import annotations

import copy
import dataclasses
import json
import pathlib
from typing import Any

import grpc
import pytest

from proxy import admission
from proxy.admission import Request
from proxy.call import Call, Facts, ModelTarget, Principal
from proxy.config import validate_config
from proxy.errors import Code, Reason, Reject
from proxy.families import Access, Kind, Method, family
from proxy.families.serving import SERVING
from proxy.limits import Lease
from proxy.routing import MethodTable
from proxy.runtime import Runtime
from proxy.server import RunningServer
from proxy.state import State, build_state
from tests.conftest import TEAM_A, base_config
from tests.rawbackend import PREDICT
from tests.test_e2e_forwarding import predict_bytes


@pytest.fixture
def state(pki, signing) -> State:
    cfg = validate_config(base_config(pki, signing, "127.0.0.1:1"))
    return build_state(cfg, connect=False)


def start(state: State, pem: bytes | None, path: str = PREDICT,
          metadata: tuple = ()) -> tuple[Call, Method]:
    call = Call(path, "test")
    return call, admission.start(state, call, Request(path, metadata, pem), Lease())


class TestStart:
    def test_authenticates_and_routes(self, state, pki) -> None:
        """The certificate becomes the principal and the path a known method."""
        call, method = start(state, pki.alice.cert_pem)
        assert call.principal.spiffe_id == TEAM_A and method.path == PREDICT
        assert call.rule == "team-a-predict"

    def test_no_credentials(self, state) -> None:
        """Without a certificate or a token the call is unauthenticated."""
        with pytest.raises(Reject) as info:
            start(state, None)
        assert info.value.reason is Reason.NO_CREDENTIALS
        assert info.value.code is Code.UNAUTHENTICATED

    def test_authenticated_before_routed(self, state) -> None:
        """An unknown path from an unauthenticated caller is refused for the credentials,
        so probing which paths exist needs credentials first."""
        with pytest.raises(Reject) as info:
            start(state, None, "/no.Such/Method")
        assert info.value.reason is Reason.NO_CREDENTIALS

    def test_unknown_method(self, state, pki) -> None:
        with pytest.raises(Reject) as info:
            start(state, pki.alice.cert_pem, "/no.Such/Method")
        assert info.value.reason is Reason.UNKNOWN_METHOD
        assert info.value.code is Code.UNIMPLEMENTED

    def test_method_authorized_before_any_body(self, state, pki) -> None:
        """A caller no rule lets call Predict is refused at start, before a body exists."""
        with pytest.raises(Reject) as info:
            start(state, pki.dns_client.cert_pem)
        assert info.value.reason is Reason.NO_MATCHING_RULE


class TestInspectAndAdmit:
    def test_unary_flow(self, state, pki) -> None:
        """start → inspect → admit: facts recorded, upstream chosen, credentials stripped
        and the identity added, the default deadline applied."""
        metadata = (("cookie", "session=1"), ("x-request-id", "7"),
                    ("x-tfgate-principal", "forged"))
        lease = Lease()
        call = Call(PREDICT, "test")
        request = Request(PREDICT, metadata, pki.alice.cert_pem)
        method = admission.start(state, call, request, lease)
        facts = admission.inspect(state, call, method, predict_bytes("half_plus_two", 2))
        assert call.facts is facts and facts.targets[0].version == 2
        admitted = admission.admit(state, call, method, facts, request)
        assert admitted.upstream == "serving" == call.upstream
        assert admitted.metadata == (("x-request-id", "7"), ("x-tfgate-principal", TEAM_A))
        assert admitted.timeout == state.config.limits.deadline.default_s
        assert state.shared.limits.snapshot()[0] == 1
        lease.release()
        assert state.shared.limits.snapshot()[0] == 0

    def test_facts_authorized(self, state, pki) -> None:
        call, method = start(state, pki.alice.cert_pem)
        with pytest.raises(Reject) as info:
            admission.inspect(state, call, method, predict_bytes("other_model"))
        assert info.value.reason is Reason.MODEL_NOT_ALLOWED


class TestDecide:
    def test_same_decision_as_the_data_path(self, state) -> None:
        """explain's entry point decides as the data path does, including routing."""
        alice = Principal(spiffe_id=TEAM_A, has_certificate=True)
        allowed = Facts(targets=(ModelTarget("half_plus_two", 1, None, "serving_default"),))
        assert admission.decide(state, alice, PREDICT, allowed).allowed
        other = Facts(targets=(ModelTarget("other_model", None, None, "serving_default"),))
        assert admission.decide(state, alice, PREDICT, other).reason is Reason.MODEL_NOT_ALLOWED
        profiler = admission.decide(state, alice, "/tensorflow.ProfilerService/Profile", Facts())
        assert profiler.reason is Reason.METHOD_ALWAYS_DENIED


class _Breaks:
    """Delegates to `inner`, except that calling `broken` raises an unexpected error."""

    def __init__(self, inner: Any, broken: str) -> None:
        self._inner, self._broken = inner, broken

    def __getattr__(self, name: str) -> Any:
        if name == self._broken:
            def explode(*args: Any, **kwargs: Any) -> Any:
                raise RuntimeError(f"secret detail of {name}")
            return explode
        return getattr(self._inner, name)


def _raising_inspect(data: bytes) -> Facts:
    raise ZeroDivisionError("inspector bug")


def _broken_table() -> MethodTable:
    predict = next(m for m in SERVING.methods if m.path == PREDICT)
    rest = tuple(m for m in SERVING.methods if m.path != PREDICT)
    broken = Method(predict.path, Access.DATA, Kind.UNARY_UNARY, _raising_inspect)
    return MethodTable([family("serving", (broken, *rest))])


STAGES = {
    "authenticate": lambda s: {"authenticator": _Breaks(s.authenticator, "authenticate")},
    "route": lambda s: {"methods": _Breaks(s.methods, "lookup")},
    "authorize": lambda s: {"policy": _Breaks(s.policy, "decide")},
    "inspect": lambda s: {"methods": _broken_table()},
    "limits.check": lambda s: {"limits": _Breaks(s.limits, "check")},
    "limits.admit": lambda s: {"limits": _Breaks(s.limits, "admit")},
    "route upstream": lambda s: {"router": _Breaks(s.router, "upstream_for")},
    "upstream metadata": lambda s: {"metadata": _Breaks(s.metadata, "upstream_metadata")},
}


class TestUnexpectedErrors:
    @pytest.mark.parametrize("stage", STAGES)
    def test_becomes_internal_and_is_never_forwarded(self, pki, signing, raw_backend,
                                                     tmp_path: pathlib.Path, stage: str) -> None:
        """A bug in any stage fails closed: INTERNAL with a generic message (the
        exception text stays in the audit record), nothing reaches the upstream."""
        config = copy.deepcopy(base_config(pki, signing, raw_backend.address))
        config["audit"]["output"] = str(tmp_path / "audit.log")
        cfg = validate_config(config)
        state = build_state(cfg)
        state = dataclasses.replace(state, **STAGES[stage](state))
        server = RunningServer(cfg, Runtime(state)).start()
        try:
            call = pki.channel(server.address, pki.alice).unary_unary(PREDICT)
            with pytest.raises(grpc.RpcError) as info:
                call(predict_bytes("half_plus_two", 1), timeout=5)
        finally:
            server.stop(0)
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert info.value.details() == "internal error"
        assert raw_backend.received == []
        (event,) = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
        assert (event["reason"], event["status"], event["decision"]) == (
            "internal-error", "INTERNAL", "deny")
        assert "Error" in event["detail"]


class TestBoundedByConfig:
    """What callers choose (names, paths) cannot grow memos or audit lines."""

    def test_decision_memo_is_bounded_in_bytes(self, state) -> None:
        """Invented model names never grow the policy's memo past its byte bound."""
        alice = Principal(spiffe_id=TEAM_A, has_certificate=True)
        memo = state.policy._decided
        for i in range(6000):
            facts = Facts(targets=(ModelTarget(f"m{i}-" + "x" * 1000, None, None, "s"),))
            state.policy.decide(alice, PREDICT, facts)
            assert memo.bytes <= 4 << 20 and len(memo) <= 4096
        assert len(memo) < 4096

    def test_long_names_are_refused(self, state, pki) -> None:
        """A model, label or signature name over 1024 characters is malformed."""
        call, method = start(state, pki.alice.cert_pem)
        with pytest.raises(Reject) as info:
            admission.inspect(state, call, method, predict_bytes("m" * 1025))
        assert info.value.reason is Reason.MALFORMED_REQUEST
        assert "longer than 1024" in info.value.message

    def test_audit_fields_are_cut_with_their_length(self) -> None:
        """Caller-chosen text in an audit event is cut at 256 characters, and the event
        records the original length."""
        from proxy.audit import event_fields

        call = Call("/x/" + "y" * 5000, "ipv4:127.0.0.1:1")
        call.code, call.reason, call.detail = Code.UNIMPLEMENTED, Reason.UNKNOWN_METHOD, "z" * 300
        fields = event_fields(call)
        assert len(fields["method"]) == 257 and fields["method_len"] == 5003
        assert fields["detail_len"] == 300 and "peer_len" not in fields
