"""Route: map a gRPC method path to what tfgate knows about it, or refuse it.

Paths are matched exactly and case-sensitively. A path not in the table is refused
with UNIMPLEMENTED without being forwarded; the profiler and SessionService are
refused with PERMISSION_DENIED whatever the policy says (see tf-protocols.md §1.1, 1.5).
"""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from proxy.call import Facts
from proxy.errors import Reason, Reject
from proxy.inspect import serving


class Access(enum.Enum):
    DATA = "data"          # per model and signature
    METADATA = "metadata"  # per model
    ADMIN = "admin"        # must be named by a rule; never matched by a glob
    INFRA = "infra"        # no model


class Kind(enum.Enum):
    UNARY_UNARY = "unary_unary"
    UNARY_STREAM = "unary_stream"
    STREAM_UNARY = "stream_unary"
    STREAM_STREAM = "stream_stream"

    @property
    def client_streams(self) -> bool:
        return self in (Kind.STREAM_UNARY, Kind.STREAM_STREAM)

    @property
    def server_streams(self) -> bool:
        return self in (Kind.UNARY_STREAM, Kind.STREAM_STREAM)


@dataclass(frozen=True)
class Method:
    path: str
    access: Access
    kind: Kind
    inspect: Callable[[bytes], Facts]

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]

    @property
    def addresses_model(self) -> bool:
        return self.access in (Access.DATA, Access.METADATA)


_SERVING = "/tensorflow.serving.PredictionService/"
_MODEL = "/tensorflow.serving.ModelService/"
_HEALTH = "/grpc.health.v1.Health/"
_EAGER = "/tensorflow.eager.EagerService/"


def _eager_stream(data: bytes) -> Facts:
    """StreamingEnqueue messages are not inspected yet: op inspection of eager requests
    (EnqueueRequest) is future work. Until then the method is ADMIN, so it is refused
    unless a rule names its full path, and such a rule grants every op it carries."""
    return Facts()


METHODS: dict[str, Method] = {m.path: m for m in (
    Method(_SERVING + "Predict", Access.DATA, Kind.UNARY_UNARY, serving.predict),
    Method(_SERVING + "Classify", Access.DATA, Kind.UNARY_UNARY, serving.classify),
    Method(_SERVING + "Regress", Access.DATA, Kind.UNARY_UNARY, serving.regress),
    Method(_SERVING + "MultiInference", Access.DATA, Kind.UNARY_UNARY, serving.multi_inference),
    Method(_SERVING + "GetModelMetadata", Access.METADATA, Kind.UNARY_UNARY, serving.metadata),
    Method(_MODEL + "GetModelStatus", Access.METADATA, Kind.UNARY_UNARY, serving.status),
    Method(_MODEL + "HandleReloadConfigRequest", Access.ADMIN, Kind.UNARY_UNARY, serving.reload),
    Method(_HEALTH + "Check", Access.INFRA, Kind.UNARY_UNARY, serving.health),
    Method(_HEALTH + "Watch", Access.INFRA, Kind.UNARY_STREAM, serving.health),
    Method(_EAGER + "StreamingEnqueue", Access.ADMIN, Kind.STREAM_STREAM, _eager_stream),
)}

# Refused whatever the policy says: the profiler writes files and directories chosen by
# the caller on the server; SessionService runs arbitrary graph tensors past signatures.
ALWAYS_DENIED = ("/tensorflow.ProfilerService/", "/tensorflow.serving.SessionService/")

_BY_NAME = {m.name: m.path for m in METHODS.values()}


def lookup(path: str) -> Method:
    method = METHODS.get(path)
    if method is not None:
        return method
    if path.startswith(ALWAYS_DENIED):
        raise Reject(grpc.StatusCode.PERMISSION_DENIED, Reason.METHOD_ALWAYS_DENIED,
                     f"method {path} is never allowed through tfgate")
    raise Reject(grpc.StatusCode.UNIMPLEMENTED, Reason.UNKNOWN_METHOD,
                 f"unknown method {path}")


def resolve_method_pattern(pattern: str) -> frozenset[str]:
    """Expand a rule's method entry to known paths; raise ValueError if it names none.

    `Predict` and `PredictionService/Predict` name one method; a pattern containing a
    glob character matches full paths but never admin methods (those must be named).
    """
    if pattern.startswith(ALWAYS_DENIED) or "SessionService" in pattern or (
            "ProfilerService" in pattern):
        raise ValueError(f"{pattern!r} is always denied and cannot be granted")
    if pattern in _BY_NAME:
        return frozenset({_BY_NAME[pattern]})
    path = pattern if pattern.startswith("/") else None
    if path is None and "/" in pattern:
        path = next((p for p in METHODS if p.endswith("." + pattern)), None)
    if path in METHODS:
        return frozenset({path})
    if any(c in pattern for c in "*?["):
        matched = frozenset(p for p, m in METHODS.items()
                            if m.access is not Access.ADMIN and fnmatch.fnmatchcase(p, pattern))
        if matched:
            return matched
    raise ValueError(f"{pattern!r} matches no known method")
