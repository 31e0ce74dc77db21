"""Which ops and functions a graph, a function library or an eager operation would run.

A `Scope` holds the functions one request defines. Call positions are resolved against
it: a name the request defines is followed (each body is walked once, whoever calls
it); anything else is reported. An op position (NodeDef.op, an eager operation's name)
that names no function here is an `OpUse`; a function position (a func-valued attr, a
gradient) is a `FunctionRef`, or, in a `closed` scope where the server knows no
functions from earlier requests (CreateSession, RegisterGraph), a refusal: TF fails
there too ("Failed to find function"). Function calls that loop are refused
(CVE-2022-23591: a self-recursive function overflows the server's stack).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from proxy.errors import malformed
from proxy.inspect.distributed.facts import Collector, check_name, limit_exceeded, quote
from proxy.pb import distributed_eager_pb2, distributed_graph_pb2

AttrValue = distributed_graph_pb2.AttrValue
FunctionDef = distributed_graph_pb2.FunctionDef

# NodeDefs and eager operations one request may hold, counting function bodies once.
MAX_NODES = 200_000
# Functions one request may define.
MAX_FUNCTIONS = 10_000
# Longest chain of calls between functions of one request. Real models nest a handful
# deep (a While body inside a tf.function inside a Keras layer); TF itself recurses
# per level when it instantiates them.
MAX_CALL_DEPTH = 64
# AttrValues visited per request, nested ones included: the walk's total work.
MAX_ATTR_VALUES = 2_000_000

# Func-valued attrs that may also name a primitive op: SymbolicGradient(f=MatMul) runs
# MatMul's registered gradient, so an undefined name there is an op position.
_OP_LIKE_FUNC_ATTRS = frozenset({("SymbolicGradient", "f")})


class Scope:
    """The functions one request defines, and which of them each caller calls."""

    def __init__(self, col: Collector, *, closed: bool) -> None:
        self.col = col
        self.closed = closed
        self.defs: dict[str, tuple[FunctionDef, str, int]] = {}  # name -> (def, where, order)
        self.calls: dict[str | None, set[str]] = {}
        self.attr_values = 0
        self._gradients: list[tuple[str, str]] = []

    # -- definitions ----------------------------------------------------------------------

    def define(self, fdef: FunctionDef, where: str, order: int = 0) -> None:
        name = fdef.signature.name
        if not name:
            raise malformed(f"{where}: function has no signature name")
        check_name(name, "function")
        prior = self.defs.get(name)
        if prior is not None:
            if (prior[0].SerializeToString(deterministic=True)
                    != fdef.SerializeToString(deterministic=True)):
                raise malformed(f"{where}: two different functions are named {quote(name)}")
            return
        if len(self.defs) >= MAX_FUNCTIONS:
            raise limit_exceeded(f"request defines more than {MAX_FUNCTIONS} functions")
        self.defs[name] = (fdef, f"{where}[{quote(name)}]", order)
        self.col.define(name)

    def library(self, lib: distributed_graph_pb2.FunctionDefLibrary, where: str,
                order: int = 0) -> None:
        for fdef in lib.function:
            self.define(fdef, f"{where}.function", order)
        for i, grad in enumerate(lib.gradient):
            # The gradient function runs wherever SymbolicGradient asks for the gradient
            # of `function_name`. RegisteredGradient names a gradient registered in the
            # server's own gradient registry, not a function: nothing to follow.
            self._gradients.append((grad.gradient_func, f"{where}.gradient[{i}]"))

    # -- call positions -------------------------------------------------------------------

    def _visible(self, name: str, before: int | None) -> bool:
        entry = self.defs.get(name)
        return entry is not None and (before is None or entry[2] < before)

    def nodes(self, nodes: Iterable[distributed_graph_pb2.NodeDef], prefix: str,
              caller: str | None) -> None:
        col, calls = self.col, self.calls.setdefault(caller, set())
        for i, node in enumerate(nodes):
            col.nodes += 1
            if col.nodes > MAX_NODES:
                raise limit_exceeded(f"request holds more than {MAX_NODES} nodes")
            op = node.op
            if not op:
                raise malformed(f"{prefix}[{i}] {quote(node.name)} has no op")
            if op in self.defs:
                calls.add(op)
            elif op not in col.ops:
                col.op(op, f"{prefix}[{i}] {quote(node.name)}")
            if node.attr:
                self.attrs(node.attr, f"{prefix}[{i}] {quote(node.name)}", caller, op)

    def operation(self, operation: distributed_eager_pb2.Operation, where: str,
                  before: int | None) -> None:
        """An eager operation, which runs at once: only functions defined by an earlier
        queue item (`before`) of this request count as defined here."""
        name = operation.name
        if not name:
            raise malformed(f"{where} has no name")
        self.col.nodes += 1
        if self._visible(name, before):
            self.calls.setdefault(None, set()).add(name)
        else:
            self.col.op(name, where)
            if operation.is_function or operation.is_component_function:
                self.col.function_ref(name, where, None)
        if operation.attrs:
            self.attrs(operation.attrs, where, None, name)

    def _function(self, name: str, where: str, caller: str | None, op_like: bool) -> None:
        if not name:
            return  # an unset optional func attr: nothing is instantiated
        if name in self.defs:
            self.calls.setdefault(caller, set()).add(name)
        elif op_like:
            self.col.op(name, where)
        elif self.closed:
            raise malformed(f"{where}: function {quote(name)} is not defined in the request")
        else:
            self.col.function_ref(name, where, caller)

    def attrs(self, attrs: Mapping[str, AttrValue], where: str, caller: str | None,
              op: str | None = None) -> None:
        """Follow func-valued attrs (and the attrs they carry) and report URL strings."""
        stack: list[tuple[Mapping[str, AttrValue], str, str | None]] = [(attrs, where, op)]
        while stack:
            mapping, at, owner = stack.pop()
            self.attr_values += len(mapping)
            if self.attr_values > MAX_ATTR_VALUES:
                raise limit_exceeded(f"request holds more than {MAX_ATTR_VALUES} attr values")
            for key, value in mapping.items():
                kind = value.WhichOneof("value")
                if kind == "s":
                    if b"://" in value.s:
                        self._url(value.s, f"{at}.attr[{quote(key)}]")
                elif kind == "tensor":
                    self.col.tensor(value.tensor, f"{at}.attr[{quote(key)}]")
                elif kind == "func":
                    here = f"{at}.attr[{quote(key)}]"
                    self._function(value.func.name, here, caller, (owner, key) in _OP_LIKE_FUNC_ATTRS)
                    if value.func.attr:
                        stack.append((value.func.attr, f"{here}.func", None))
                elif kind == "list" and (value.list.func or value.list.s or value.list.tensor):
                    here = f"{at}.attr[{quote(key)}]"
                    for j, t in enumerate(value.list.tensor):
                        self.col.tensor(t, f"{here}.list.tensor[{j}]")
                    for j, s in enumerate(value.list.s):
                        if b"://" in s:
                            self._url(s, f"{here}.list.s[{j}]")
                    for j, fn in enumerate(value.list.func):
                        self._function(fn.name, f"{here}.list.func[{j}]", caller, False)
                        if fn.attr:
                            stack.append((fn.attr, f"{here}.list.func[{j}]", None))

    def _url(self, raw: bytes, where: str) -> None:
        self.col.url(raw.decode("utf-8", "replace"), where)

    # -- bodies and the call graph --------------------------------------------------------

    def finish(self) -> None:
        """Walk every defined body once, resolve gradients, refuse call cycles."""
        for name, (fdef, where, _) in self.defs.items():
            self._body(name, fdef, where)
        for func, where in self._gradients:
            self._function(func, where, None, False)
        self._check_calls()

    def _body(self, name: str, fdef: FunctionDef, where: str) -> None:
        for attr_def in fdef.signature.attr:
            for value in (attr_def.default_value, attr_def.allowed_values):
                self.attrs({attr_def.name: value}, f"{where}.signature", name)
        if fdef.attr:
            self.attrs(fdef.attr, where, name)
        for index, arg in fdef.arg_attr.items():
            if arg.attr:
                self.attrs(arg.attr, f"{where}.arg_attr[{index}]", name)
        self.nodes(fdef.node_def, f"{where}.node_def", name)

    def _check_calls(self) -> None:
        depth: dict[str, int] = {}
        for root in self.defs:
            if root in depth:
                continue
            path, stack = {root}, [(root, iter(sorted(self.calls.get(root, ()))))]
            while stack:
                name, callees = stack[-1]
                callee = next(callees, None)
                if callee is None:
                    stack.pop()
                    path.discard(name)
                    depth[name] = 1 + max((depth[c] for c in self.calls.get(name, ())), default=0)
                elif callee in path:
                    raise malformed(f"function {quote(callee)} calls itself; recursion is refused")
                elif callee not in depth:
                    if len(stack) >= MAX_CALL_DEPTH:
                        raise limit_exceeded(
                            f"functions nest more than {MAX_CALL_DEPTH} calls deep")
                    path.add(callee)
                    stack.append((callee, iter(sorted(self.calls.get(callee, ())))))
            if depth[root] > MAX_CALL_DEPTH:
                raise limit_exceeded(f"functions nest more than {MAX_CALL_DEPTH} calls deep")


def walk_graph(col: Collector, graph_def: distributed_graph_pb2.GraphDef, where: str, *,
               closed: bool) -> None:
    """A GraphDef's nodes and its whole library, every function body once."""
    scope = Scope(col, closed=closed)
    scope.library(graph_def.library, f"{where}.library")
    scope.nodes(graph_def.node, f"{where}.node", None)
    scope.finish()
