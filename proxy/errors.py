"""The three ways things go wrong in tfgate, and nothing else.

- `ConfigError`: a configuration (or a file it names) is unusable. It carries the
  key path so the message can say *where*; only `cli.py` turns it into an exit code.
- `Reject`: a stage refuses a call. It carries the gRPC status, a reason from the
  closed `Reason` set (for audit and metrics) and a message safe to show the client.
  `server.py` is the one place that turns it into a status.
- `UpstreamError`: the upstream could not be reached or configured.
"""

from __future__ import annotations

import enum

import grpc


class ConfigError(Exception):
    """A configuration problem; `path` is the key path, e.g. `policy.rules[2].models[0]`."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


class Reason(enum.Enum):
    """Why a call ended the way it did. Values are stable: they appear in audit logs."""

    ALLOWED = "allowed"
    # authentication
    NO_CREDENTIALS = "no-credentials"
    TOKEN_MALFORMED = "token-malformed"
    TOKEN_INVALID = "token-invalid"
    TOKEN_EXPIRED = "token-expired"
    TOKEN_NOT_YET_VALID = "token-not-yet-valid"
    TOKEN_UNKNOWN_ISSUER = "token-unknown-issuer"
    TOKEN_UNKNOWN_KEY = "token-unknown-key"
    TOKEN_BAD_AUDIENCE = "token-bad-audience"
    TOKEN_ALGORITHM_NOT_ALLOWED = "token-algorithm-not-allowed"
    TOKEN_MISSING_CLAIM = "token-missing-claim"
    MULTIPLE_TOKENS = "multiple-tokens"
    # routing and inspection
    UNKNOWN_METHOD = "unknown-method"
    METHOD_ALWAYS_DENIED = "method-always-denied"
    MALFORMED_REQUEST = "malformed-request"
    NO_UPSTREAM = "no-upstream"
    # authorization
    NO_MATCHING_RULE = "no-rule-for-principal"
    IDENTITY_REQUIREMENT = "identity-requirement-not-met"
    METHOD_NOT_ALLOWED = "method-not-allowed"
    MODEL_NOT_ALLOWED = "model-not-allowed"
    VERSION_NOT_ALLOWED = "version-not-allowed"
    SIGNATURE_NOT_ALLOWED = "signature-not-allowed"
    # limits
    LIMIT_EXCEEDED = "limit-exceeded"
    INPUT_NOT_ALLOWED = "input-not-allowed"  # a dtype or empty tensor the limits refuse
    RATE_LIMITED = "rate-limited"
    CONCURRENCY_LIMITED = "concurrency-limited"
    # forwarding
    UPSTREAM_STATUS = "upstream-status"
    UPSTREAM_UNAVAILABLE = "upstream-unavailable"
    CANCELLED = "cancelled"
    INTERNAL_ERROR = "internal-error"


class Reject(Exception):
    """Stop this call with `code`; `message` goes to the client, `detail` only to audit."""

    def __init__(
        self, code: grpc.StatusCode, reason: Reason, message: str, detail: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.detail = detail or message


def unauthenticated(reason: Reason, message: str, detail: str = "") -> Reject:
    return Reject(grpc.StatusCode.UNAUTHENTICATED, reason, message, detail)


def denied(reason: Reason, message: str) -> Reject:
    return Reject(grpc.StatusCode.PERMISSION_DENIED, reason, message)


def malformed(message: str) -> Reject:
    return Reject(grpc.StatusCode.INVALID_ARGUMENT, Reason.MALFORMED_REQUEST, message)


class UpstreamError(Exception):
    """An upstream cannot be used (bad address, unreadable credentials)."""
