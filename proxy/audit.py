"""Audit: one structured JSON event per call, built only from the `Call` record.

Nothing secret is ever on the record: tokens, keys and request bodies are not fields of
`Call`, so they cannot be logged by accident. Calls refused before the caller was
identified are the one exception to "every call": anyone who can reach the port makes
them, so their events pass a per-process rate (`audit.unauthenticated_per_s`) and the
rest are summed into one `audit_suppressed` event per second at most.
"""

from __future__ import annotations

import collections
import datetime
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from proxy.call import Call, ModelTarget
from proxy.errors import Code, Reason
from proxy.shadow import audit_field


def open_sink(output: str) -> IO[str]:
    if output == "stdout":
        return sys.stdout
    if output == "stderr":
        return sys.stderr
    return open(output, "a", buffering=1, encoding="utf-8")


# Text fields that hold what callers chose (paths, names, details that quote them) are cut
# to this many characters; the event then also carries `<field>_len`, the original length.
MAX_FIELD_CHARS = 256
_CALLER_TEXT = ("method", "principal", "peer", "model", "version", "signature", "detail")
# An enum's .name and .value are properties, looked up on every use: once here instead.
_DECISION_REASON = {r: ("allow" if r.forwarded else "deny", r.value) for r in Reason}
_STATUS_NAME = {c: c.name for c in Code}


def _signatures(targets: tuple[ModelTarget, ...]) -> str | None:
    if len(targets) == 1:
        return targets[0].signature or None
    return ",".join(t.signature for t in targets if t.signature) or None


def event_fields(call: Call) -> dict[str, Any]:
    targets = call.facts.targets if call.facts else ()
    first = targets[0] if targets else None
    decision, reason = _DECISION_REASON[call.reason]
    fields: dict[str, Any] = {
        "method": call.method,
        "principal": call.principal.display() if call.principal else None,
        "peer": call.peer,
        "model": first.name if first else None,
        "version": first.version_text() if first else None,
        "signature": _signatures(targets),
        "decision": decision,
        "reason": reason,
        "rule": call.rule,
        "status": _STATUS_NAME[call.code],
        "latency_ms": round(call.latency_ms(), 3),
        "bytes_in": call.bytes_in,
        "bytes_out": call.bytes_out,
        "messages_in": call.messages_in,
        "messages_out": call.messages_out,
        "upstream": call.upstream,
    }
    if call.http_status is not None:
        fields["http_status"] = call.http_status
    if call.ops_judged:  # distributed TF: the first ops judged, and how many in all
        fields["ops"] = call.ops
        fields["ops_judged"] = call.ops_judged
    if call.code is not Code.OK:
        fields["detail"] = call.detail
    for key in _CALLER_TEXT:
        value = fields.get(key)
        if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
            fields[key] = value[:MAX_FIELD_CHARS] + "…"
            fields[f"{key}_len"] = len(value)
    shadow = audit_field(call)
    if shadow is not None:
        fields["shadow"] = shadow
    return fields


class StrangerBudget:
    """A token bucket for the events of unidentified callers, and what it held back."""

    def __init__(self, per_s: float, clock: Callable[[], float]) -> None:
        self._per_s, self._clock = per_s, clock
        self._tokens, self._at = per_s, clock()
        self.suppressed: collections.Counter[str] = collections.Counter()
        self._reported = self._at

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._per_s, self._tokens + (now - self._at) * self._per_s)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def summary(self, *, force: bool = False) -> dict[str, Any] | None:
        """The held-back counts, at most once a second (or now, with `force`)."""
        now = self._clock()
        if not self.suppressed or (not force and now - self._reported < 1):
            return None
        counts, self.suppressed = self.suppressed, collections.Counter()
        fields = {"count": sum(counts.values()), "reasons": dict(counts),
                  "seconds": round(now - self._reported, 3)}
        self._reported = now
        return fields


def utc_stamp() -> str:
    """The event's `timestamp`: ISO 8601 in UTC with a `Z` (microseconds unless zero)."""
    return datetime.datetime.now(tz=datetime.UTC).isoformat().replace("+00:00", "Z")


# One encoder, built once: `json.dumps` with any argument builds a new one per call. Its
# settings are json.dumps' defaults (", " and ": " separators, ASCII only, the repr of a
# value JSON has no form for): the form the audit stream has always had (structlog's
# JSONRenderer wrote it before, tests/test_audit_format.py compares the two).
_ENCODER = json.JSONEncoder(default=repr)
# One lock for every AuditLog of the process: the loop thread writes the current config's
# events while a reload thread closes the old log (its last summary), maybe to one stdout.
_WRITING = threading.Lock()


class AuditLog:
    """Writes audit events to a sink; `emit` never raises into the data path. One event
    is one line: the fields in order, then `event` (`call` or `audit_suppressed`) and
    `timestamp`. Written here rather than through a logging library: the audit stream
    must not follow the operational log's level (a `logging.level: warning` would drop
    every event), and a call pays for its line only (~3× less than a processor chain)."""

    def __init__(self, sink: IO[str], unauthenticated_per_s: float = 100,
                 clock: Callable[[], float] = time.monotonic,
                 stamp: Callable[[], str] = utc_stamp) -> None:
        self._sink = sink
        self._stdout = sink is sys.stdout  # then the current one, as print() would
        self._standard = sink in (sys.stdout, sys.stderr)  # never closed by us
        self._strangers = StrangerBudget(unauthenticated_per_s, clock)
        self._stamp = stamp

    def emit(self, call: Call) -> None:
        try:
            self._report_suppressed()
            if call.principal is None and not self._strangers.take():
                self._strangers.suppressed[call.reason.value] += 1  # a closed set of keys
                return
            self._write("call", event_fields(call))
        except Exception:  # noqa: BLE001 - a full disk must not fail the call
            pass

    def _write(self, event: str, fields: dict[str, Any]) -> None:
        fields["event"] = event
        fields["timestamp"] = self._stamp()
        line = _ENCODER.encode(fields) + "\n"
        sink = sys.stdout if self._stdout else self._sink
        with _WRITING:
            sink.write(line)
            if not getattr(sink, "line_buffering", False):  # a line-buffered file is flushed
                sink.flush()

    def _report_suppressed(self, *, force: bool = False) -> None:
        summary = self._strangers.summary(force=force)
        if summary is not None:
            self._write("audit_suppressed", summary)

    def close(self) -> None:
        try:
            self._report_suppressed(force=True)
        except Exception:  # noqa: BLE001
            pass
        if not self._standard:
            self._sink.close()
