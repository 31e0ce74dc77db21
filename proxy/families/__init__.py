"""Method families: the methods of one kind of server, with their call kinds and inspectors.

A family is what an upstream `kind` brings: TF Serving's ModelServer today, the
distributed runtime next. Each method says how it is called (`Kind`), how policy treats
it (`Access`) and how its request bytes become `Facts` (`inspect`). The method table a
config uses is built from the families of its upstreams (`routing.MethodTable`), never
from a global, so tests and new families add methods by building a table.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from proxy.call import Facts, ModelTarget


class Grants(Protocol):
    """What the policy grants the caller of one call, asked while filtering a response."""

    def allows(self, path: str, target: ModelTarget) -> bool: ...

    def any_data(self, target: ModelTarget) -> bool:
        """Whether some data method of the family is granted on `target`."""
        ...


# Filters an upstream response down to what the caller may see: (response, the request's
# target, the caller's grants) -> the response to send.
ResponseFilter = Callable[[bytes, ModelTarget, Grants], bytes]


class Access(enum.Enum):
    DATA = "data"          # per model and signature
    METADATA = "metadata"  # per model
    ADMIN = "admin"        # must be named by a rule; never matched by a glob
    INFRA = "infra"        # no model


class Kind(enum.Enum):
    """The four gRPC call kinds; values are grpc's own handler/multicallable names."""

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
    family: str = ""
    respond: ResponseFilter | None = None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]

    @property
    def addresses_model(self) -> bool:
        return self.access in (Access.DATA, Access.METADATA)


@dataclass(frozen=True)
class Family:
    """The methods an upstream kind serves, and path prefixes refused whatever the
    policy says (they exist on that server but must never be reachable)."""

    name: str
    methods: tuple[Method, ...]
    always_denied: tuple[str, ...] = ()


def family(name: str, methods: tuple[Method, ...], always_denied: tuple[str, ...] = ()) -> Family:
    """A family whose methods all carry its name."""
    tagged = tuple(Method(m.path, m.access, m.kind, m.inspect, name, m.respond) for m in methods)
    return Family(name, tagged, always_denied)
