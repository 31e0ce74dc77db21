"""The audit line's exact bytes, and that nothing but the audit section decides whether
one is written.

AuditLog writes its lines itself (proxy/audit.py); structlog's JSONRenderer wrote them
before, and the processor chain it ran is rebuilt here as the reference, so any change of
key order, separators, escaping or timestamp form shows up as a byte difference."""

from __future__ import annotations

import io
import json
import re
import time
from typing import Any

import pytest
import structlog

from proxy import oplog
from proxy.audit import AuditLog, event_fields, utc_stamp
from proxy.call import Call, Facts, ModelTarget, Principal, ShadowVerdict
from proxy.errors import Code, Reason

PREDICT = "/tensorflow.serving.PredictionService/Predict"
STAMP = "2026-12-02T05:25:00.123456Z"


class Sink(io.StringIO):
    def close(self) -> None:  # read after the log closed
        pass


def _reference(event: str, fields: dict[str, Any]) -> str:
    """The line structlog's chain (TimeStamper iso/utc, JSONRenderer) made of an event."""
    render = structlog.processors.JSONRenderer(sort_keys=False)
    event_dict = {**fields, "event": event, "timestamp": STAMP}
    return render(None, "info", event_dict) + "\n"  # type: ignore[arg-type]


def _calls() -> list[Call]:
    token = Principal(subject="bench loadgen#1", issuer="https://issuer.example", has_token=True,
                      scopes=frozenset({"predict"}))
    both = Principal(spiffe_id="spiffe://example.org/a", has_certificate=True).merged(token)
    allowed = Call(PREDICT, "ipv4:192.0.2.1:4000")
    allowed.principal = both
    allowed.facts = Facts(targets=(ModelTarget("half_plus_two", 2, None, "serving_default"),))
    allowed.rule, allowed.upstream = "team-a", "serving"
    allowed.bytes_in, allowed.bytes_out, allowed.messages_in, allowed.messages_out = 190, 42, 1, 1
    denied = Call(PREDICT, "ipv6:[2001:db8::1]:5000")
    denied.principal = token
    denied.facts = Facts(targets=(ModelTarget("m\u00e9t\u00e9o \"x\"", None, "canary", "s"),
                                  ModelTarget("m\u00e9t\u00e9o \"x\"", None, "canary", "t")))
    denied.reason, denied.code = Reason.SIGNATURE_NOT_ALLOWED, Code.PERMISSION_DENIED
    denied.detail = "signature \"t\" of model ... \u2192 refused\n\ttab"
    denied.shadow = ShadowVerdict(False, True, Reason.ALLOWED, "new-rule")
    denied.http_status = 403
    cluster = Call("/tensorflow.eager.EagerService/StreamingEnqueue", "unix:/run/x.sock")
    cluster.principal = Principal(cn="worker 0", has_certificate=True)
    cluster.note_ops(["Mul", "AddV2", "x" * 100])
    long = Call("/" + "p" * 300, "ipv4:192.0.2.9:1")
    long.reason, long.code, long.detail = Reason.UNKNOWN_METHOD, Code.UNIMPLEMENTED, "d" * 400
    long.principal = token
    return [allowed, denied, cluster, long]


def test_call_lines_are_byte_for_byte_structlogs(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = Sink()
    log = AuditLog(sink, stamp=lambda: STAMP)
    expected = ""
    for call in _calls():
        # latency_ms: the same value for both renderings
        monkeypatch.setattr(time, "monotonic", lambda call=call: call.started + 0.0012345)
        expected += _reference("call", event_fields(call))
        log.emit(call)
    assert sink.getvalue() == expected
    assert "\\u00e9" in expected and "\\u2192" in expected  # ASCII only, as before


def test_suppressed_summary_line_is_byte_for_byte_structlogs() -> None:
    clock = [100.0]
    sink = Sink()
    log = AuditLog(sink, unauthenticated_per_s=1, clock=lambda: clock[0], stamp=lambda: STAMP)
    for reason in (Reason.TOKEN_MALFORMED, Reason.TOKEN_MALFORMED, Reason.NO_CREDENTIALS):
        call = Call(PREDICT, "ipv4:192.0.2.1:4000")
        call.reason, call.code = reason, Code.UNAUTHENTICATED
        log.emit(call)
    clock[0] = 101.5
    log.close()
    last = sink.getvalue().splitlines(keepends=True)[-1]
    assert last == _reference("audit_suppressed", {
        "count": 2, "reasons": {"token-malformed": 1, "no-credentials": 1}, "seconds": 1.5})


def test_timestamp_is_iso_utc_with_z() -> None:
    """TimeStamper(fmt="iso", utc=True)'s form: microseconds unless zero, then `Z`."""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", utc_stamp())


@pytest.mark.parametrize("level", ["warning", "error"])
def test_the_operational_log_level_does_not_silence_the_audit(level: str) -> None:
    """`logging.level` is the operational log's: with `warning` or `error` every call is
    still audited (the audit stream was once built on the operational logger's level
    filter and wrote nothing at those levels)."""
    try:
        oplog.configure("json", level, stream=io.StringIO())
        sink = Sink()
        log = AuditLog(sink)
        call = Call(PREDICT, "ipv4:192.0.2.1:4000")
        call.principal = Principal(spiffe_id="spiffe://example.org/a", has_certificate=True)
        log.emit(call)
        (event,) = [json.loads(line) for line in sink.getvalue().splitlines()]
        assert event["event"] == "call" and event["principal"] == "spiffe://example.org/a"
    finally:
        oplog.configure()
