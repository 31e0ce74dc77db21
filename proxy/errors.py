"""How things go wrong in tfgate: a config that cannot be used, or a call that is refused.

- `ConfigError`: a configuration (or a file it names) is unusable. It carries the
  key path so the message can say *where*; only `cli.py` turns it into an exit code.
  `ConfigErrors` is one that carries several (every problem a document has, not the first).
- `Reject`: a stage refuses a call. It carries a reason from the closed `Reason` set
  (for audit and metrics), a message safe to show the client, and a detail for audit.
  The status a client sees comes from one table, `STATUS`, keyed by reason: a gRPC code
  (transport-neutral `Code`, numbered as gRPC numbers them) and an HTTP status for the
  REST front. Only `upstream-status` carries a code of its own: the upstream's.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence


class ConfigError(Exception):
    """A configuration problem; `path` is the key path, e.g. `policy.rules[2].models[0]`."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


class ConfigErrors(ConfigError):
    """Several configuration problems found at once (`errors`, each a ConfigError, in
    document order). It is a ConfigError whose path and problem are the first one's, so
    code that handles one error still works; `str()` lists them all, one per line."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        if not errors:
            raise ValueError("ConfigErrors needs at least one error")
        super().__init__(errors[0].path, errors[0].problem)
        self.errors = tuple(errors)

    def __str__(self) -> str:
        return "\n".join(Exception.__str__(e) for e in self.errors)


def config_errors(errors: Sequence[ConfigError]) -> ConfigError:
    """The one error itself, or all of them as ConfigErrors."""
    return errors[0] if len(errors) == 1 else ConfigErrors(errors)


class Code(enum.IntEnum):
    """gRPC's canonical status codes, by their wire numbers (grpc/status.h)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


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
    TOKEN_REQUIRED = "token-required"  # a certificate alone, where a token is required
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
    # distributed TF (cluster family)
    OP_NOT_ALLOWED = "op-not-allowed"
    ADDRESS_NOT_ALLOWED = "address-not-allowed"
    DEBUG_URL_REFUSED = "debug-url-refused"
    SETTING_NOT_ALLOWED = "setting-not-allowed"
    HANDLE_NOT_OWNED = "handle-not-owned"
    FUNCTION_NOT_REGISTERED = "function-not-registered"
    # limits
    LIMIT_EXCEEDED = "limit-exceeded"
    INPUT_NOT_ALLOWED = "input-not-allowed"  # a dtype or empty tensor the limits refuse
    RATE_LIMITED = "rate-limited"
    CONCURRENCY_LIMITED = "concurrency-limited"
    # the listener's own bounds (docs/hostile-networks.md)
    REQUEST_TIMEOUT = "request-timeout"  # the request message did not arrive in time
    OVERLOADED = "overloaded"            # a per-process budget (buffered bytes, per peer)
    # forwarding
    UPSTREAM_STATUS = "upstream-status"
    UPSTREAM_UNAVAILABLE = "upstream-unavailable"
    CANCELLED = "cancelled"
    INTERNAL_ERROR = "internal-error"

    @property
    def forwarded(self) -> bool:
        """Whether a call ending with this reason was allowed (and went upstream)."""
        return self in _FORWARDED


_FORWARDED = frozenset({Reason.ALLOWED, Reason.UPSTREAM_STATUS, Reason.UPSTREAM_UNAVAILABLE,
                        Reason.CANCELLED})

_TOKEN = (Code.UNAUTHENTICATED, 401)
# The one place a reason becomes a status: (gRPC code, HTTP status for the REST front).
STATUS: dict[Reason, tuple[Code, int]] = {
    Reason.ALLOWED: (Code.OK, 200),
    Reason.NO_CREDENTIALS: _TOKEN,
    Reason.TOKEN_MALFORMED: _TOKEN,
    Reason.TOKEN_INVALID: _TOKEN,
    Reason.TOKEN_EXPIRED: _TOKEN,
    Reason.TOKEN_NOT_YET_VALID: _TOKEN,
    Reason.TOKEN_UNKNOWN_ISSUER: _TOKEN,
    Reason.TOKEN_UNKNOWN_KEY: _TOKEN,
    Reason.TOKEN_BAD_AUDIENCE: _TOKEN,
    Reason.TOKEN_ALGORITHM_NOT_ALLOWED: _TOKEN,
    Reason.TOKEN_MISSING_CLAIM: _TOKEN,
    Reason.MULTIPLE_TOKENS: _TOKEN,
    Reason.TOKEN_REQUIRED: _TOKEN,
    Reason.UNKNOWN_METHOD: (Code.UNIMPLEMENTED, 404),
    Reason.METHOD_ALWAYS_DENIED: (Code.PERMISSION_DENIED, 403),
    Reason.MALFORMED_REQUEST: (Code.INVALID_ARGUMENT, 400),
    Reason.NO_UPSTREAM: (Code.NOT_FOUND, 404),
    Reason.NO_MATCHING_RULE: (Code.PERMISSION_DENIED, 403),
    Reason.IDENTITY_REQUIREMENT: (Code.PERMISSION_DENIED, 403),
    Reason.METHOD_NOT_ALLOWED: (Code.PERMISSION_DENIED, 403),
    Reason.MODEL_NOT_ALLOWED: (Code.PERMISSION_DENIED, 403),
    Reason.VERSION_NOT_ALLOWED: (Code.PERMISSION_DENIED, 403),
    Reason.SIGNATURE_NOT_ALLOWED: (Code.PERMISSION_DENIED, 403),
    Reason.OP_NOT_ALLOWED: (Code.PERMISSION_DENIED, 403),
    Reason.ADDRESS_NOT_ALLOWED: (Code.PERMISSION_DENIED, 403),
    Reason.DEBUG_URL_REFUSED: (Code.PERMISSION_DENIED, 403),
    Reason.SETTING_NOT_ALLOWED: (Code.PERMISSION_DENIED, 403),
    Reason.HANDLE_NOT_OWNED: (Code.PERMISSION_DENIED, 403),
    Reason.FUNCTION_NOT_REGISTERED: (Code.PERMISSION_DENIED, 403),
    Reason.LIMIT_EXCEEDED: (Code.RESOURCE_EXHAUSTED, 413),
    Reason.INPUT_NOT_ALLOWED: (Code.INVALID_ARGUMENT, 400),
    Reason.RATE_LIMITED: (Code.RESOURCE_EXHAUSTED, 429),
    Reason.CONCURRENCY_LIMITED: (Code.RESOURCE_EXHAUSTED, 429),
    Reason.REQUEST_TIMEOUT: (Code.DEADLINE_EXCEEDED, 408),
    Reason.OVERLOADED: (Code.RESOURCE_EXHAUSTED, 503),
    Reason.UPSTREAM_STATUS: (Code.UNKNOWN, 500),  # replaced by the upstream's own code
    Reason.UPSTREAM_UNAVAILABLE: (Code.UNAVAILABLE, 503),
    Reason.CANCELLED: (Code.CANCELLED, 499),
    Reason.INTERNAL_ERROR: (Code.INTERNAL, 500),
}

# HTTP statuses for gRPC codes that come from an upstream (google.rpc.Code's mapping).
HTTP_FOR_CODE: dict[Code, int] = {
    Code.OK: 200, Code.CANCELLED: 499, Code.UNKNOWN: 500, Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504, Code.NOT_FOUND: 404, Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403, Code.RESOURCE_EXHAUSTED: 429, Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409, Code.OUT_OF_RANGE: 400, Code.UNIMPLEMENTED: 501, Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503, Code.DATA_LOSS: 500, Code.UNAUTHENTICATED: 401,
}


class Reject(Exception):
    """Stop this call for `reason`; `message` goes to the client, `detail` only to audit.
    `upstream_code` is set only for `upstream-status`: the code the upstream returned."""

    def __init__(self, reason: Reason, message: str, detail: str = "",
                 upstream_code: Code | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.detail = detail or message
        self.upstream_code = upstream_code

    @property
    def code(self) -> Code:
        return self.upstream_code if self.upstream_code is not None else STATUS[self.reason][0]

    @property
    def http_status(self) -> int:
        if self.upstream_code is not None:
            return HTTP_FOR_CODE[self.upstream_code]
        return STATUS[self.reason][1]


def unauthenticated(reason: Reason, message: str, detail: str = "") -> Reject:
    return Reject(reason, message, detail)


def malformed(message: str) -> Reject:
    return Reject(Reason.MALFORMED_REQUEST, message)
