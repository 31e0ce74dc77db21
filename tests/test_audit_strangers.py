"""The audit log is bounded against strangers: calls refused before the caller was
identified (anyone who reaches a token-only port can make them, as fast as they like) are
written at `audit.unauthenticated_per_s` per process at most, and the rest are counted in
`audit_suppressed` events, at most one a second. Identified callers are always written.
A real token-only listener writing to a file, and the AuditLog with a fake clock."""

from __future__ import annotations

import io
import json
import pathlib
from typing import Any

import grpc
from conftest import AUDIENCE, ISSUER
from test_front_dos import jwt_only_config

from bench.messages import predict_request
from proxy.audit import AuditLog
from proxy.call import Call
from proxy.errors import Reason
from tests.cluster_helpers import principal
from tfgate_dev.devpki import mint_claims

PREDICT = "/tensorflow.serving.PredictionService/Predict"


def _events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def _call(reason: Reason, who: str | None = None) -> Call:
    call = Call(PREDICT, "ipv4:192.0.2.1:4000")
    call.principal = principal(who) if who else None
    call.reason = reason
    return call


class Sink(io.StringIO):
    def close(self) -> None:  # the test reads what was written after the log closed
        pass


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_strangers_past_the_rate_are_counted_not_written() -> None:
    sink, clock = Sink(), FakeClock()
    log = AuditLog(sink, unauthenticated_per_s=5, clock=clock)
    for _ in range(20):
        log.emit(_call(Reason.TOKEN_MALFORMED))
    log.emit(_call(Reason.TOKEN_REQUIRED, "spiffe://example.org/known"))
    written = _events(sink.getvalue())
    assert [e["event"] for e in written] == ["call"] * 6  # a burst of 5, and the known one
    assert written[-1]["principal"] is not None
    clock.now += 0.5  # half a second later: 2 more fit, no summary yet
    for _ in range(4):
        log.emit(_call(Reason.MALFORMED_REQUEST))
    assert len(_events(sink.getvalue())) == 8
    clock.now += 1.0
    log.emit(_call(Reason.TOKEN_MALFORMED))
    summary = _events(sink.getvalue())[8]
    assert summary["event"] == "audit_suppressed"
    assert summary["count"] == 17
    assert summary["reasons"] == {"token-malformed": 15, "malformed-request": 2}
    log.close()
    assert _events(sink.getvalue())[-1]["event"] == "call"  # nothing was held back since


def test_close_reports_what_was_held_back() -> None:
    sink = Sink()
    log = AuditLog(sink, unauthenticated_per_s=0, clock=FakeClock())
    for _ in range(3):
        log.emit(_call(Reason.TOKEN_MALFORMED))
    assert sink.getvalue() == ""
    log.close()
    (summary,) = _events(sink.getvalue())
    assert summary["event"] == "audit_suppressed" and summary["count"] == 3


def test_a_flood_of_strangers_grows_the_log_by_the_rate_only(pki, signing, make_proxy,
                                                            tmp_path: pathlib.Path) -> None:
    """300 calls with a bad token and 5 with a good one on a real token-only listener:
    at most the burst plus the rate over the elapsed time are written for the strangers,
    every known caller's call is, and written plus suppressed account for every call."""
    config = jwt_only_config(pki, signing)
    audit = tmp_path / "audit.jsonl"
    config["audit"] = {"output": str(audit), "unauthenticated_per_s": 10}
    proxy = make_proxy(config)
    token = signing.key.token(mint_claims(issuer=ISSUER, audience=AUDIENCE,
                                          subject="batch-job", scope="predict"))
    with pki.channel(proxy.address) as channel:
        predict = channel.unary_unary(PREDICT)
        for bearer in ["not-a-jwt"] * 300 + [token] * 5:
            try:
                predict(predict_request(), timeout=5,
                        metadata=(("authorization", f"Bearer {bearer}"),))
            except grpc.RpcError as err:
                assert err.code() in (grpc.StatusCode.UNAUTHENTICATED,
                                      grpc.StatusCode.PERMISSION_DENIED)
    proxy.stop(0)  # closes the audit log: what was held back is reported
    events = _events(audit.read_text())
    calls = [e for e in events if e["event"] == "call"]
    known = [e for e in calls if e["principal"] is not None]
    strangers = [e for e in calls if e["principal"] is None]
    suppressed = sum(e["count"] for e in events if e["event"] == "audit_suppressed")
    assert len(known) == 5
    assert len(strangers) + suppressed == 300
    assert suppressed > 0
    assert len(strangers) < 200  # 10 a second: the 300 calls took far less than 19 s
