"""Authorize a distributed-TF request's facts: its ops, addresses, debug URLs, settings.

Pure, like `policy.py`, which calls it once a rule grants the method: `judge` takes the
rules that grant it to the caller and the request's `ClusterFacts` (with the functions
this caller registered already taken out of `ops`, by `cluster_guard.py`) and says
whether every fact passes, or which one failed and where it was found.

- Ops: each op must be permitted by some granting rule (`OpRule`). The default denylist
  (`inspect/dangerous_ops.py`) holds for every rule; a rule's `lift` takes named ops off
  it for that rule only.
- Addresses: every host:port a cluster definition names must be a plain one (`plain_address`)
  and match `cluster.addresses` (the server would dial it).
- Debug URLs: always refused (they make the server write `file://` dumps or dial out).
- Settings: refused unless a granting rule names them (`settings:`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from proxy import config
from proxy.errors import ConfigError, Reason
from proxy.globs import DNS_LABELS, compile_globs
from proxy.inspect.dangerous_ops import DEFAULT_DENYLIST, categories_of
from proxy.inspect.distributed import ClusterFacts
from proxy.inspect.distributed.facts import quote


def _globs(patterns: list[str] | None, where: str, sep: str = "/") -> re.Pattern[str] | None:
    if not patterns:
        return None
    try:
        return compile_globs(patterns, sep)
    except ValueError as exc:
        raise ConfigError(where, str(exc)) from None


@dataclass(frozen=True)
class OpRule:
    """One rule's op filter, compiled. No `ops:` key is `OpRule()`: every op the default
    denylist does not refuse."""

    allow: re.Pattern[str] | None = None  # None: any op (that nothing else refuses)
    allow_all: bool = True
    deny: re.Pattern[str] | None = None
    lift: frozenset[str] = frozenset()

    @classmethod
    def compile(cls, cfg: config.OpFilter | None, where: str) -> OpRule:
        if cfg is None:
            return cls()
        return cls(allow=_globs(cfg.allow, f"{where}.allow"), allow_all=cfg.allow is None,
                   deny=_globs(cfg.deny, f"{where}.deny"), lift=frozenset(cfg.lift))

    def permits(self, op: str) -> bool:
        if op in self.lift:
            return True
        if op in DEFAULT_DENYLIST:
            return False
        if self.deny is not None and self.deny.fullmatch(op):
            return False
        return self.allow_all or (self.allow is not None and self.allow.fullmatch(op) is not None)


@dataclass(frozen=True)
class Grant:
    """What one granting rule allows of a cluster request."""

    rule: str
    ops: OpRule
    settings: frozenset[str]


@dataclass(frozen=True)
class Refusal:
    reason: Reason
    message: str


_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?\Z")
_OCTET = re.compile(r"(?:0|[1-9][0-9]{0,2})\Z")
_PORT = re.compile(r"[1-9][0-9]{0,4}\Z")


def _host_problem(host: str) -> str | None:
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return "not an IPv6 address in brackets"
        return "an IPv6 zone" if "%" in host else None
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        return "not a DNS name or IPv4 address"
    if labels[-1][0].isdigit() and not (
            len(labels) == 4 and all(_OCTET.match(o) and int(o) < 256 for o in labels)):
        # The resolver reads "010.1", "0x7f.1" or "2130706433" as IPv4 addresses in other
        # spellings (octal, hex, fewer parts): only the dotted-decimal one is judged.
        return "not a dotted-decimal IPv4 address"
    return None


def plain_address(address: str) -> str | None:
    """Why `address` is not a plain host:port, or None. TF dials "dns:///" + address, and
    gRPC reads that as a URI: '#' or '?' ends the host early and %XX decodes, so
    "evil%2Eexample%3A80#.tf.test:2222" dials evil.example:80 while matching
    "*.tf.test:2222" (docs/wire-facts.md). Only names, IPv4 and bracketed IPv6 addresses
    with a decimal port pass."""
    host, colon, port = address.rpartition(":")
    if not colon or not _PORT.match(port) or int(port) > 65535:
        return "no decimal port 1-65535 after the last ':'"
    return _host_problem(host)


class Addresses:
    """`cluster.addresses`, compiled: `*` is one DNS label (or one byte group of an IPv4
    address), `**` anything. Only a plain host:port can match."""

    def __init__(self, cfg: config.Cluster) -> None:
        self._allowed = _globs(cfg.addresses, "cluster.addresses", DNS_LABELS)

    def allows(self, address: str) -> bool:
        return (self._allowed is not None and plain_address(address) is None
                and self._allowed.fullmatch(address) is not None)


def _op_message(op: str, where: str) -> str:
    denied = [c for c in categories_of(op) if c.deny_by_default]
    why = f" (default denylist, {denied[0].name}: {denied[0].reason})" if denied else ""
    return f"op {quote(op)} at {where} is not allowed for this caller{why}"


def judge(grants: Sequence[Grant], facts: ClusterFacts, addresses: Addresses
          ) -> tuple[Refusal | None, tuple[str, ...]]:
    """(None, the rules used) when every fact passes, else (the first refusal, ())."""
    for url in facts.debug_urls:
        return Refusal(Reason.DEBUG_URL_REFUSED, f"debug URL {quote(url.url)} at {url.where} "
                       "is refused: it makes the server write files or dial out"), ()
    for address in facts.addresses:
        if not addresses.allows(address.address):
            problem = plain_address(address.address)
            why = (f"is not a plain host:port ({problem})" if problem
                   else "is not in cluster.addresses")
            return Refusal(Reason.ADDRESS_NOT_ALLOWED, f"address {quote(address.address)} "
                           f"(job {quote(address.job)} task {address.task}, at "
                           f"{address.where}) {why}"), ()
    used: dict[str, None] = {}
    for setting in facts.settings:
        grant = next((g for g in grants if setting.name in g.settings), None)
        if grant is None:
            return Refusal(Reason.SETTING_NOT_ALLOWED, f"setting {setting.name} at "
                           f"{setting.where} is not allowed for this caller"), ()
        used[grant.rule] = None
    for use in facts.ops:
        grant = next((g for g in grants if g.ops.permits(use.op)), None)
        if grant is None:
            return Refusal(Reason.OP_NOT_ALLOWED, _op_message(use.op, use.where)), ()
        used[grant.rule] = None
    return None, tuple(used) or (grants[0].rule,)


def check_tensors(cfg: config.ClusterTensors, facts: ClusterFacts) -> Refusal | None:
    """The decoded size of each tensor and of all of them (`cluster.tensors`)."""
    total = 0
    for t in facts.tensors:
        if t.decoded_bytes > cfg.max_tensor_bytes:
            return Refusal(Reason.LIMIT_EXCEEDED, f"tensor at {t.name}: {t.decoded_bytes} "
                           f"bytes decoded > max {cfg.max_tensor_bytes} "
                           "(cluster.tensors.max_tensor_bytes)")
        total += t.decoded_bytes
    if total > cfg.max_request_bytes:
        return Refusal(Reason.LIMIT_EXCEEDED, f"request: {total} tensor bytes decoded > max "
                       f"{cfg.max_request_bytes} (cluster.tensors.max_request_bytes)")
    return None
