"""HTTP status and body for every way a REST call ends: one table, one function.

ModelServer answers REST errors with `{"error": "<message>"}` and an HTTP status derived from
the gRPC-style status code (`http_server.cc`, docs/wire-facts.md "REST API"). tfgate keeps
that mapping, so a REST client sees the same status for the same failure whether tfgate
or the server refused the call. A few tfgate reasons have a more precise HTTP status than
their gRPC code (a path that matches nothing is 404, not 501; a request too large is 413,
not 429); `STATUS_BY_REASON` lists them, and a `RestReject` can carry its own status for
HTTP-only failures (405, 411, 415). The core's single reason -> status table can absorb
both dictionaries as they are.
"""

from __future__ import annotations

import json

import grpc

from proxy.errors import Reason, Reject

_C = grpc.StatusCode

# ModelServer's ToHTTPStatusCode, code for code.
STATUS_BY_CODE: dict[grpc.StatusCode, int] = {
    _C.OK: 200, _C.CANCELLED: 499, _C.UNKNOWN: 500, _C.INVALID_ARGUMENT: 400,
    _C.DEADLINE_EXCEEDED: 504, _C.NOT_FOUND: 404, _C.ALREADY_EXISTS: 409,
    _C.PERMISSION_DENIED: 403, _C.RESOURCE_EXHAUSTED: 429, _C.FAILED_PRECONDITION: 400,
    _C.ABORTED: 409, _C.OUT_OF_RANGE: 400, _C.UNIMPLEMENTED: 501, _C.INTERNAL: 500,
    _C.UNAVAILABLE: 503, _C.DATA_LOSS: 500, _C.UNAUTHENTICATED: 401,
}

# tfgate reasons whose HTTP status is more precise than their gRPC code's.
STATUS_BY_REASON: dict[Reason, int] = {
    Reason.UNKNOWN_METHOD: 404,     # no REST path of ModelServer's API matches
    Reason.LIMIT_EXCEEDED: 413,     # body or decoded inputs too large ("Content Too Large")
    Reason.RATE_LIMITED: 429,
    Reason.CONCURRENCY_LIMITED: 429,
    Reason.UPSTREAM_UNAVAILABLE: 503,
}


class RestReject(Reject):
    """A refusal that only HTTP has a word for (wrong method, unsupported encoding...)."""

    def __init__(self, http_status: int, code: grpc.StatusCode, reason: Reason,
                 message: str) -> None:
        super().__init__(code, reason, message)
        self.http_status = http_status


def http_status(reject: Reject) -> int:
    """The HTTP status a REST client gets for `reject`."""
    own = getattr(reject, "http_status", None)
    if own is not None:
        return own
    return STATUS_BY_REASON.get(reject.reason) or STATUS_BY_CODE.get(reject.code, 500)


def status_for_code(code: grpc.StatusCode) -> int:
    """For an upstream's gRPC status in translated mode: what ModelServer's REST would say."""
    return STATUS_BY_CODE.get(code, 500)


def error_body(message: str) -> bytes:
    """`{"error": message}` laid out as ModelServer's writer does (4-space indent)."""
    return json.dumps({"error": message}, indent=4, ensure_ascii=False).encode(
        "utf-8", "backslashreplace")


def not_found(message: str) -> Reject:
    return Reject(_C.NOT_FOUND, Reason.UNKNOWN_METHOD, message)


def too_large(message: str) -> Reject:
    return Reject(_C.RESOURCE_EXHAUSTED, Reason.LIMIT_EXCEEDED, message)
