"""HTTP status and body for every way a REST call ends.

ModelServer answers REST errors with `{"error": "<message>"}` and an HTTP status derived from
the gRPC-style status code (`http_server.cc`, docs/wire-facts.md §6). The core's one table
(`proxy.errors.STATUS`, and `HTTP_FOR_CODE` for upstream codes, which is ModelServer's own
mapping) gives every reason its HTTP status, so a REST client sees the same status for the
same failure whether tfgate or the server refused the call. A `RestReject` carries its own
status for failures only HTTP has a word for (405, 411, 415).
"""

from __future__ import annotations

import json

from proxy.errors import HTTP_FOR_CODE, Code, Reason, Reject


class RestReject(Reject):
    """A refusal that only HTTP has a word for (wrong method, unsupported encoding...)."""

    def __init__(self, http_status: int, reason: Reason, message: str) -> None:
        super().__init__(reason, message)
        self._http_status = http_status

    @property
    def http_status(self) -> int:
        return self._http_status


def http_status(reject: Reject) -> int:
    """The HTTP status a REST client gets for `reject`."""
    return reject.http_status


def status_for_code(code: Code) -> int:
    """For an upstream's gRPC status in translated mode: what ModelServer's REST would say."""
    return HTTP_FOR_CODE.get(code, 500)


def error_body(message: str) -> bytes:
    """`{"error": message}` laid out as ModelServer's writer does (4-space indent)."""
    return json.dumps({"error": message}, indent=4, ensure_ascii=False).encode(
        "utf-8", "backslashreplace")


def not_found(message: str) -> Reject:
    return Reject(Reason.UNKNOWN_METHOD, message)


def too_large(message: str) -> Reject:
    return Reject(Reason.LIMIT_EXCEEDED, message)
