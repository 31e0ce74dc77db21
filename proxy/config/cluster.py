"""`cluster:` what tfgate allows a distributed-TF cluster to name, and how much it
remembers about it; and a rule's `ops:` filter (policy stage, cluster family only)."""

from __future__ import annotations

import pydantic
from pydantic import Field

from proxy.config.base import MiB, Section
from proxy.inspect.dangerous_ops import DEFAULT_DENYLIST


def _glob_or_name(value: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"{value!r} is not an op name or glob")
    return value


class OpFilter(Section):
    """Which ops a rule lets its principals run, in every graph, function body and eager
    operation of a request. The default denylist (`proxy/inspect/dangerous_ops.py`:
    file I/O, Python callbacks, debug dumps, RPC, collectives...) applies to every rule
    whatever `allow` says; only `lift` takes named ops off it, for this rule."""

    allow: list[str] | None = Field(
        None, description="Op names or globs (`Stateless*`); only these may run. Omitted: "
        "every op not denied. An allowlist is the stronger policy: it also refuses ops a "
        "newer TensorFlow adds.")
    deny: list[str] = Field(
        default_factory=list, description="Op names or globs refused on top of the default "
        "denylist.")
    lift: list[str] = Field(
        default_factory=list, description="Exact names from the default denylist this rule "
        "lets run (e.g. `CollectiveReduceV2` for workers that all-reduce). Never a glob.")

    @pydantic.field_validator("allow", "deny")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [_glob_or_name(v) for v in value]

    @pydantic.field_validator("lift")
    @classmethod
    def _lifted_are_denied(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in DEFAULT_DENYLIST:
                raise ValueError(f"{name!r} is not in the default denylist (nothing to lift; "
                                 "lift takes exact op names)")
        return value

    @pydantic.model_validator(mode="after")
    def _coherent(self) -> OpFilter:
        if self.allow is not None and self.deny:
            raise ValueError("give allow or deny, not both (an allowlist already refuses "
                             "everything it does not name)")
        unlifted = [n for n in self.allow or () if n in DEFAULT_DENYLIST and n not in self.lift]
        if unlifted:
            raise ValueError(f"allow names {unlifted[0]!r}, which the default denylist "
                             "refuses: add it to lift as well to really allow it")
        return self


class Handles(Section):
    """Ownership of the handles tfgate saw created (contexts, sessions, graphs, callables,
    steps) and of the functions registered in them: tfgate remembers which principal
    created each, in this process's memory, and refuses their use by any other."""

    max_bytes_per_principal: int = Field(
        4 * MiB, gt=0, description="Memory one principal's handles and function names may "
        "use; past it that principal's least recently used entries are forgotten (their "
        "later use is refused).")
    max_bytes: int = Field(
        64 * MiB, gt=0, description="Memory all entries may use; past it, entries idle "
        "longer than `idle_s` are forgotten, and if that is not enough a new handle is "
        "refused with RESOURCE_EXHAUSTED.")
    idle_s: float = Field(
        86400, gt=0, description="An entry not used for this long may be forgotten when "
        "memory is short (TF contexts with keep-alive and sessions can idle for hours).")

    @pydantic.model_validator(mode="after")
    def _within_total(self) -> Handles:
        if self.max_bytes_per_principal > self.max_bytes:
            raise ValueError("max_bytes_per_principal must not exceed max_bytes")
        return self


class ClusterTensors(Section):
    """What the tensors of one distributed-TF request may make the server allocate,
    computed from shape and dtype (a Const of shape [1000000000] with one value is 4 GB
    at the server and a few bytes on the wire). The wire size stays bounded by
    `listen.max_message_bytes`; these bound what repeating a value expands to."""

    max_tensor_bytes: int = Field(
        256 * MiB, gt=0, description="Most bytes one tensor decodes to (a Const value, a "
        "feed, an eager input).")
    max_request_bytes: int = Field(
        1024 * MiB, gt=0, description="Most bytes all tensors of one request decode to.")


class Cluster(Section):
    """Distributed TensorFlow (upstreams of `kind: cluster`)."""

    addresses: list[str] = Field(
        default_factory=list, description="host:port globs (`*` is one DNS label or "
        "address byte group, `**` anything) that a cluster definition in CreateContext, "
        "UpdateContext, CreateWorkerSession, CreateSession or RegisterGraph may name: the "
        "server would dial each of them. Only a plain host:port matches (a DNS name, "
        "dotted-decimal IPv4 or bracketed IPv6 address, and a decimal port). Empty: every "
        "request naming an address is refused.")
    handles: Handles = Field(default_factory=Handles, description="Handle ownership memory.")
    tensors: ClusterTensors = Field(default_factory=ClusterTensors,
                                    description="Decoded sizes of the tensors requests carry.")
