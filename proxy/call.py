"""The values that travel down the pipeline: who is calling, what they asked for, and
the one mutable `Call` record that each stage fills in and `audit.py` reads. No value
here knows the transport: the gRPC and REST fronts both fill in the same record."""

from __future__ import annotations

import dataclasses
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from proxy.errors import Code, Reason

if TYPE_CHECKING:
    from proxy.inspect.distributed.facts import ClusterFacts

DEFAULT_SIGNATURE = "serving_default"
OPS_RECORDED = 16  # op names one audit event lists (a stream's first ones)
_OP_CHARS = 80     # longer names (registered functions) are cut in the audit event


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller: certificate identity, token identity, or both."""

    spiffe_id: str | None = None
    dns: tuple[str, ...] = ()
    cn: str | None = None
    has_certificate: bool = False
    subject: str | None = None
    issuer: str | None = None
    scopes: frozenset[str] = frozenset()
    has_token: bool = False
    # display() and limit_key(), rendered once per object: a principal is immutable, and
    # the one a cached token or certificate yields is the same object call after call.
    # Not fields of its value (no compare, no init): `replace` builds a fresh one.
    _display: str | None = field(default=None, init=False, repr=False, compare=False)
    _limit_key: str | None = field(default=None, init=False, repr=False, compare=False)

    def merged(self, other: Principal) -> Principal:
        """Combine a certificate principal with a token principal."""
        return dataclasses.replace(
            self,
            subject=other.subject,
            issuer=other.issuer,
            scopes=other.scopes,
            has_token=other.has_token,
        )

    def limit_key(self) -> str:
        """Who a caller is for concurrency and rate limits: the certificate identity when
        there is one (the same certificate with or without a token is one caller), else
        the token identity."""
        key = self._limit_key
        if key is None:
            key = self.display() if not self.has_certificate else dataclasses.replace(
                self, subject=None, issuer=None, scopes=frozenset(), has_token=False).display()
            object.__setattr__(self, "_limit_key", key)
        return key

    def display(self) -> str:
        """A short, stable name for logs, limits and the identity header; never a secret.
        This is the one rendering of a principal. Each part is percent-encoded (so a CN or
        `sub` holding spaces or '#' cannot pass for a different caller, say one that also
        presented a token), which also makes the result printable ASCII: it goes into
        metadata as it is, never escaped again."""
        shown = self._display
        if shown is None:
            shown = self._render()
            object.__setattr__(self, "_display", shown)
        return shown

    def _render(self) -> str:
        parts = []
        if self.has_certificate:
            parts.append(_escape(self.spiffe_id) if self.spiffe_id else (
                f"dns:{_escape(self.dns[0])}" if self.dns else (
                    f"cn:{_escape(self.cn)}" if self.cn is not None else "cert:no-identity")))
        if self.has_token:
            parts.append(f"jwt:{_escape(self.issuer or '')}#{_escape(self.subject or '')}")
        return " ".join(parts) or "anonymous"


def _escape(value: str) -> str:
    return urllib.parse.quote(value, safe=":/@.-_~+=!$&'()*,;")


@dataclass(frozen=True, slots=True)
class ModelTarget:
    """One model a request addresses. `signature` is None for methods that have none."""

    name: str
    version: int | None = None
    label: str | None = None
    signature: str | None = None

    def version_text(self) -> str:
        if self.version is not None:
            return str(self.version)
        return f"label:{self.label}" if self.label is not None else "latest"


@dataclass(frozen=True, slots=True)
class TensorFacts:
    """What the server will allocate for one input tensor (computed, never trusted)."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    elements: int
    decoded_bytes: int
    max_string_bytes: int = 0  # longest string element (DT_STRING only)
    string_bytes: int = 0      # all string elements together, after fill (DT_STRING only)


@dataclass(frozen=True, slots=True)
class ExampleFacts:
    """Shape of a Classify/Regress/MultiInference `Input` (see inspect/examples.py)."""

    examples: int
    max_features: int
    max_value_bytes: int
    context_bytes: int
    decoded_bytes: int = 0  # the DT_STRING tensor the server builds from the examples


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything policy and limits may know about a request: plain values, no protobuf.
    `cluster` is set for distributed-TF requests (families/cluster.py) and only there:
    the ops, functions, addresses and handles the request names."""

    targets: tuple[ModelTarget, ...] = ()
    tensors: tuple[TensorFacts, ...] = ()
    examples: ExampleFacts | None = None
    cluster: ClusterFacts | None = None


@dataclass(frozen=True, slots=True)
class ShadowVerdict:
    """What the shadow policy decided where it differed from the enforced policy (allow
    against deny); the first such difference of a call (proxy/shadow.py)."""

    enforced_allowed: bool
    allowed: bool
    reason: Reason
    rule: str | None


@dataclass(slots=True)
class Call:
    """One call's record, filled in stage by stage. Times are `time.monotonic()`:
    `started` at the headers, `forwarded_at` when admission let it go upstream, `ended`
    when the front finished it (metrics.py turns them into tfgate's and the upstream's
    share of the latency)."""

    method: str
    peer: str
    started: float = field(default_factory=time.monotonic)
    principal: Principal | None = None
    facts: Facts | None = None
    upstream: str | None = None
    reason: Reason = Reason.ALLOWED
    rule: str | None = None
    code: Code = Code.OK
    detail: str = ""
    bytes_in: int = 0
    bytes_out: int = 0
    messages_in: int = 0
    messages_out: int = 0
    forwarded_at: float | None = None
    ended: float | None = None
    limit: str | None = None           # the limit a limit refusal names
    shadow: ShadowVerdict | None = None
    http_status: int | None = None  # the REST front's answer; None for gRPC calls
    # Distributed TF: the first distinct op names judged (at most OPS_RECORDED, across
    # every message of a stream) and how many op uses were judged in all.
    ops: list[str] = field(default_factory=list)
    ops_judged: int = 0

    def note_ops(self, names: list[str]) -> None:
        self.ops_judged += len(names)
        for name in names:
            if len(self.ops) >= OPS_RECORDED:
                break
            short = name if len(name) <= _OP_CHARS else name[:_OP_CHARS] + "..."
            if short not in self.ops:
                self.ops.append(short)

    def latency_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000.0
