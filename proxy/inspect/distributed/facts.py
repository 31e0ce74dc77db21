"""What a distributed-TF request would make the server do, as plain values.

`ClusterFacts` is what an inspector returns; `Collector` builds one while a request is
walked, and enforces the bounds on how much a request can make it hold: every string a
caller chooses and that ends up in a fact is capped (longer ones are refused, never
truncated, so that a policy never judges a different name than the server sees), and
`where` texts are truncated because they only describe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from proxy.call import TensorFacts
from proxy.errors import Reason, Reject
from proxy.inspect.tensors import inspect_tensor
from proxy.pb.tensor_pb2 import TensorProto

# Distinct op names one request may name. TF 2.21 registers about 1,500 ops; the rest
# of the budget is for functions registered by earlier requests, named as op types.
MAX_OPS = 4096
# Function references (name, caller) to functions the request does not define.
MAX_FUNCTION_REFS = 4096
# host:port entries across all cluster definitions of one request.
MAX_ADDRESSES = 1024
# Handles one request names (step ids of eager cleanups, containers, KV keys...).
MAX_HANDLES = 4096
# Debug URLs and URL-valued attrs one request may carry.
MAX_URLS = 256
# Tensors one request carries (constants, feeds, sends, eager inputs).
MAX_TENSORS = 200_000
# Op, function, job and attr names: TF's own are far shorter; a cap keeps facts small.
MAX_NAME_CHARS = 1024
# A handle, address or URL longer than this is no real one.
MAX_VALUE_CHARS = 1024
# `where` is descriptive: truncated to this, with names inside it cut to _WHERE_NAME.
MAX_WHERE_CHARS = 200
_WHERE_NAME = 48


def limit_exceeded(message: str) -> Reject:
    return Reject(Reason.LIMIT_EXCEEDED, message)


@dataclass(frozen=True, slots=True)
class OpUse:
    """An op type the request would run. Where the server also looks at earlier state
    (an eager context, a session's graph), `op` may instead name a function registered
    by an earlier request: TF resolves a name as a registered op first, and refuses to
    register a function named like an op."""

    op: str
    where: str


@dataclass(frozen=True, slots=True)
class FunctionRef:
    """A function the request calls but does not define: it must have been registered
    earlier in the same context or session. `caller` is the function whose body holds
    the reference (None at top level), so that a stateful layer can find call cycles
    that span requests."""

    name: str
    where: str
    caller: str | None = None


@dataclass(frozen=True, slots=True)
class Address:
    """A host:port the server would dial, from a cluster definition in the request."""

    address: str
    job: str
    task: int
    where: str


@dataclass(frozen=True, slots=True)
class Handle:
    """A bearer capability the request names: `creates` when the request brings the
    server-side object into being (CreateContext's context_id), else it uses one."""

    kind: str
    value: str
    creates: bool
    where: str


@dataclass(frozen=True, slots=True)
class DebugUrl:
    """A URL the server would write to or dial: debug watch URLs, and any string attr
    holding '://' (debug op specs, PrintV2 file sinks, call attrs filling them)."""

    url: str
    where: str


@dataclass(frozen=True, slots=True)
class Setting:
    """A request field with server-wide effect that a policy may refuse."""

    name: str
    value: str
    where: str


@dataclass(frozen=True, slots=True)
class ClusterFacts:
    """Everything policy may know about one distributed-TF request message."""

    ops: tuple[OpUse, ...] = ()                # each op name once, first place found
    function_refs: tuple[FunctionRef, ...] = ()
    defines: tuple[str, ...] = ()              # functions the request defines/registers
    addresses: tuple[Address, ...] = ()
    handles: tuple[Handle, ...] = ()
    debug_urls: tuple[DebugUrl, ...] = ()
    settings: tuple[Setting, ...] = ()
    nodes: int = 0                             # NodeDefs and eager operations walked
    # What the server allocates for each tensor the request carries (Const values and
    # other tensor attrs, RunStep/RunCallable feeds, RunGraph sends, eager inputs and
    # pushed tensors), sized from shape and dtype; the name says where it was found.
    tensors: tuple[TensorFacts, ...] = ()


def quote(name: str) -> str:
    """A name as it appears inside `where`: quoted, escaped, cut short."""
    short = name if len(name) <= _WHERE_NAME else name[:_WHERE_NAME] + "..."
    return json.dumps(short, ensure_ascii=True)


def bounded_where(where: str) -> str:
    return where if len(where) <= MAX_WHERE_CHARS else where[:MAX_WHERE_CHARS - 3] + "..."


def check_name(name: str, what: str) -> str:
    if len(name) > MAX_NAME_CHARS:
        raise limit_exceeded(f"{what} name of {len(name)} characters > max {MAX_NAME_CHARS}")
    return name


def _check_value(value: str, what: str) -> str:
    if len(value) > MAX_VALUE_CHARS:
        raise limit_exceeded(f"{what} of {len(value)} characters > max {MAX_VALUE_CHARS}")
    return value


class Collector:
    """Gathers the facts of one request, refusing it when a bound is passed."""

    def __init__(self) -> None:
        self.ops: dict[str, OpUse] = {}
        self.refs: dict[tuple[str, str | None], FunctionRef] = {}
        self.defines: dict[str, None] = {}
        self.addresses: list[Address] = []
        self.handles: list[Handle] = []
        self.urls: list[DebugUrl] = []
        self.settings: list[Setting] = []
        self.tensors: list[TensorFacts] = []
        self.nodes = 0

    def op(self, op: str, where: str) -> None:
        if op not in self.ops:
            if len(self.ops) >= MAX_OPS:
                raise limit_exceeded(f"request names more than {MAX_OPS} distinct ops")
            self.ops[check_name(op, "op")] = OpUse(op, bounded_where(where))

    def function_ref(self, name: str, where: str, caller: str | None) -> None:
        if (name, caller) not in self.refs:
            if len(self.refs) >= MAX_FUNCTION_REFS:
                raise limit_exceeded(
                    f"request references more than {MAX_FUNCTION_REFS} undefined functions")
            self.refs[(check_name(name, "function"), caller)] = FunctionRef(
                name, bounded_where(where), caller)

    def define(self, name: str) -> None:
        self.defines[name] = None

    def address(self, address: str, job: str, task: int, where: str) -> None:
        if len(self.addresses) >= MAX_ADDRESSES:
            raise limit_exceeded(f"request names more than {MAX_ADDRESSES} cluster addresses")
        self.addresses.append(Address(_check_value(address, "address"), check_name(job, "job"),
                                      task, bounded_where(where)))

    def handle(self, kind: str, value: str | int, creates: bool, where: str) -> None:
        """Integers are reported as their unsigned 64-bit pattern: eager RecvTensor names
        the context by its fixed64 id in a signed int64 step_id field."""
        if len(self.handles) >= MAX_HANDLES:
            raise limit_exceeded(f"request names more than {MAX_HANDLES} handles")
        text = str(value % 2**64) if isinstance(value, int) else _check_value(value, kind)
        self.handles.append(Handle(kind, text, creates, bounded_where(where)))

    def url(self, url: str, where: str) -> None:
        if len(self.urls) >= MAX_URLS:
            raise limit_exceeded(f"request carries more than {MAX_URLS} URLs")
        self.urls.append(DebugUrl(_check_value(url, "URL"), bounded_where(where)))

    def setting(self, name: str, value: str, where: str) -> None:
        self.settings.append(Setting(name, _check_value(value, name), bounded_where(where)))

    def tensor(self, tensor: TensorProto, where: str) -> None:
        """Size a tensor as the server will (malformed representations are refused)."""
        if len(self.tensors) >= MAX_TENSORS:
            raise limit_exceeded(f"request carries more than {MAX_TENSORS} tensors")
        self.tensors.append(inspect_tensor(bounded_where(where), tensor))

    def facts(self) -> ClusterFacts:
        return ClusterFacts(
            ops=tuple(self.ops.values()), function_refs=tuple(self.refs.values()),
            defines=tuple(self.defines), addresses=tuple(self.addresses),
            handles=tuple(self.handles), debug_urls=tuple(self.urls),
            settings=tuple(self.settings), nodes=self.nodes, tensors=tuple(self.tensors))
