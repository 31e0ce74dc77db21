"""Bind distributed-TF handles and functions to the principal that created them.

TF's handles are bearer capabilities: whoever names a context id, a session handle or
a graph handle may use it (graph handles are per-session counters, docs/wire-facts.md
§5.4). tfgate remembers who created each (`handles.py`) and refuses any other caller
with `handle-not-owned`. For one call, in `admission.py`'s order:

1. `check` (before policy): every handle the request uses must be the caller's; a
   handle it creates must not be someone else's. A name at an op position that is a
   function this caller registered in the context or session is taken out of the ops
   policy will judge; a function reference that is not one is `function-not-registered`.
   A definition named like a TF op is refused (TF looks ops up first, so it would run
   that op; `inspect/tf_op_names.py`).
2. `admit` (once policy and limits passed): claims the contexts, sessions and steps the
   request creates, and holds its definitions as pending in the call's `Exchange`.
3. `answered` (per response, in order): binds what the server created (CreateSession's
   session, RegisterGraph's graph, MakeCallable's callable, PartialRunSetup's run), then
   commits the pending definitions and forgets what a close or cleanup released. A
   StreamingEnqueue client sends its next messages before the answers to the earlier
   ones (it registers a function, then calls it): pending definitions are visible to
   later messages of the same stream at once, because the server runs a stream in order
   and ends it at the first failure; other calls see them once committed.
4. `abandon` (when the call ends): the claims of requests never answered with OK are
   undone, so a create the server refused makes no one an owner.

Steps are bound where tfgate sees them begin (RunGraph, an eager operation's
func_step_id); a step it never saw begin (a RecvTensor from a peer worker for a step its
own master started) passes, unless it is another caller's step or context.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from dataclasses import dataclass, field

from proxy import config
from proxy.cluster_policy import check_tensors
from proxy.errors import Reason, Reject, malformed
from proxy.handles import HandleTable, Key, TableFull
from proxy.inspect.distributed import ClusterFacts, Handle, response_handles
from proxy.inspect.distributed.facts import quote
from proxy.inspect.tf_op_names import NAMES as TF_OPS

log = logging.getLogger("tfgate")

MAX_PENDING_NAMES = 65_536  # function names one call may hold uncommitted
MAX_PENDING = 65_536        # requests of one call forwarded and not yet answered
# ... and of every call of the process together: a ticket is ~550 B, so ~150 MB at most
# (else a few callers with streams whose server stalls could hold GBs).
MAX_PENDING_PROCESS = 262_144
_MASTER, _WORKER, _EAGER = ("/tensorflow.MasterService/", "/tensorflow.WorkerService/",
                            "/tensorflow.eager.EagerService/")
# Methods whose success releases the handle they name (of this kind).
_RELEASES = {
    _EAGER + "CloseContext": "context", _MASTER + "CloseSession": "session",
    _WORKER + "DeleteWorkerSession": "session", _WORKER + "DeregisterGraph": "graph",
    _MASTER + "ReleaseCallable": "callable", _WORKER + "CleanupGraph": "step",
}
_SCOPED = frozenset({"graph", "callable", "partial_run"})  # numbered within a session
_OPEN_SESSION = frozenset({_MASTER + "ListDevices"})  # "" lists the whole cluster's devices


def _not_owned(handle: Handle) -> Reject:
    return Reject(Reason.HANDLE_NOT_OWNED, f"the {handle.kind} named by {handle.where} was "
                  "not created through tfgate by this caller")


@dataclass(slots=True)
class Ticket:
    """What one checked request leaves for its response."""

    method: str
    owner: str
    scope: Key | None = None        # the context or session it works in
    session: str | None = None      # the session handle it names
    defines: tuple[str, ...] = ()
    claims: list[tuple[Key, Key | None]] = field(default_factory=list)  # (key, parent)
    made: list[Key] = field(default_factory=list)  # claims that were new entries
    releases: list[Key] = field(default_factory=list)
    removes: list[str] = field(default_factory=list)  # functions removed from the scope


class Exchange:
    """One call's checked requests awaiting their responses, oldest first, and the
    definitions they hold uncommitted."""

    waiting = 0  # tickets held by every Exchange of the process (its one event loop)

    def __init__(self) -> None:
        self.tickets: collections.deque[Ticket] = collections.deque()
        self.pending: dict[Key, collections.Counter[str]] = {}
        self.pending_names = 0

    def visible(self, scope: Key, name: str) -> bool:
        names = self.pending.get(scope)
        return names is not None and name in names

    def hold(self, ticket: Ticket) -> None:
        if len(self.tickets) >= MAX_PENDING:
            raise Reject(Reason.LIMIT_EXCEEDED, f"more than {MAX_PENDING} requests awaiting "
                         "the server's answer on one call")
        if Exchange.waiting >= MAX_PENDING_PROCESS:
            raise Reject(Reason.LIMIT_EXCEEDED, f"more than {MAX_PENDING_PROCESS} requests "
                         "awaiting their servers' answers in this tfgate process; try again "
                         "later")
        if ticket.scope is not None and ticket.defines:
            if self.pending_names + len(ticket.defines) > MAX_PENDING_NAMES:
                raise Reject(Reason.LIMIT_EXCEEDED, f"more than {MAX_PENDING_NAMES} function "
                             "definitions awaiting the server's answer on one call")
            self.pending.setdefault(ticket.scope, collections.Counter()).update(ticket.defines)
            self.pending_names += len(ticket.defines)
        self.tickets.append(ticket)
        Exchange.waiting += 1

    def oldest(self) -> Ticket:
        """The oldest held ticket, no longer held (its definitions settled)."""
        ticket = self.tickets.popleft()
        Exchange.waiting -= 1
        self._settle(ticket)
        return ticket

    def newest(self) -> Ticket:
        """The ticket held last, no longer held (its definitions settled)."""
        ticket = self.tickets.pop()
        Exchange.waiting -= 1
        self._settle(ticket)
        return ticket

    def _settle(self, ticket: Ticket) -> None:
        names = self.pending.get(ticket.scope) if ticket.scope else None
        if names is not None and ticket.defines:
            names.subtract(ticket.defines)
            for name in ticket.defines:
                if names[name] <= 0:
                    del names[name]
            self.pending_names -= len(ticket.defines)


class ClusterGuard:
    """One config's view of the process's handle table (`Shared.handles`)."""

    def __init__(self, cfg: config.Cluster, table: HandleTable) -> None:
        self._caps = cfg.handles
        self._tensors = cfg.tensors
        self.table = table

    def check_sizes(self, facts: ClusterFacts) -> None:
        """What the request's tensors decode to (`cluster.tensors`); raises Reject."""
        refusal = check_tensors(self._tensors, facts)
        if refusal is not None:
            raise Reject(refusal.reason, refusal.message)

    def check(self, owner: str, method: str, facts: ClusterFacts, exchange: Exchange
              ) -> tuple[ClusterFacts, Ticket]:
        """The facts left for policy to judge, and the request's ticket; raises Reject."""
        for name in facts.defines:
            if name in TF_OPS:
                raise malformed(f"function {quote(name)} is named like a TF op; TF would run "
                                "the op, so it cannot be registered")
        ticket = Ticket(method, owner, defines=facts.defines)
        for handle in facts.handles:
            self._handle(ticket, handle)
        scope = ticket.scope

        def own(name: str) -> bool:
            return scope is not None and (self.table.has_function(scope, name)
                                          or exchange.visible(scope, name))

        for ref in facts.function_refs:
            if not own(ref.name):
                raise Reject(Reason.FUNCTION_NOT_REGISTERED, f"function {quote(ref.name)} at "
                             f"{ref.where} was not registered by this caller in this context "
                             "or session")
        ops = tuple(use for use in facts.ops if not own(use.op))
        if len(ops) != len(facts.ops):
            facts = dataclasses.replace(facts, ops=ops)
        return facts, ticket

    def _handle(self, ticket: Ticket, handle: Handle) -> None:
        kind, value = handle.kind, handle.value
        if kind in ("context", "session"):
            if kind == "session" and value == "":
                if ticket.method in _OPEN_SESSION:
                    return
                named = ("an empty session_handle" if handle.where == "session_handle"
                         else handle.where)
                raise Reject(Reason.HANDLE_NOT_OWNED, f"the worker's shared legacy session "
                             f"({named}) cannot be bound to a caller")
            key = (kind, value)
            self._must_be_free_or_own(ticket.owner, key, handle, missing_ok=handle.creates)
            if handle.creates:
                ticket.claims.append((key, None))
            ticket.scope = key
            if kind == "session":
                ticket.session = value
        elif kind in _SCOPED and ticket.session is not None:
            key = (kind, f"{ticket.session}/{value}")
            self._must_be_free_or_own(ticket.owner, key, handle, missing_ok=False)
        elif kind == "step":
            key = ("step", value)
            self._must_be_free_or_own(ticket.owner, key, handle, missing_ok=True)
            self._must_be_free_or_own(ticket.owner, ("context", value), handle, missing_ok=True)
            if handle.creates or (ticket.scope is not None and ticket.scope[0] == "context"):
                ticket.claims.append((key, ticket.scope))
        elif kind == "function":
            ticket.removes.append(value)  # in the caller's own context: no one else's
            return
        elif kind == "master_task":
            key = ("master_task", value)  # bound to the first master that names it
            self._must_be_free_or_own(ticket.owner, key, handle, missing_ok=True)
            ticket.claims.append((key, None))
            return
        else:
            return  # containers, collective keys, coordination: granted per method only
        if _RELEASES.get(ticket.method) == kind:
            ticket.releases.append(key)

    def _must_be_free_or_own(self, owner: str, key: Key, handle: Handle, *,
                             missing_ok: bool) -> None:
        found = self.table.owner(key)
        if found != owner and (found is not None or not missing_ok):
            raise _not_owned(handle)

    def admit(self, ticket: Ticket, exchange: Exchange) -> None:
        """Claim what the request creates (policy has passed it); hold its definitions."""
        exchange.hold(ticket)
        try:
            for key, parent in ticket.claims:
                if self.table.put(key, ticket.owner, self._caps, parent):
                    ticket.made.append(key)
        except TableFull as full:
            exchange.newest()
            self._unclaim(ticket)
            raise Reject(Reason.LIMIT_EXCEEDED, "tfgate's handle table is full; try again "
                         "later", f"cluster guard: {full}") from None

    def abandon(self, exchange: Exchange) -> None:
        """The call ended: a request the server never answered with OK created nothing, so
        the claims it made are undone. Else a caller could claim an id tfgate had forgotten
        (a restart, an eviction) but the server still holds: the server refuses the second
        create, and the claim would make that caller the owner of someone else's context."""
        while exchange.tickets:
            self._unclaim(exchange.oldest())

    def _unclaim(self, ticket: Ticket) -> None:
        for key in reversed(ticket.made):
            if self.table.owner(key) == ticket.owner:
                self.table.forget(key)
        ticket.made.clear()

    def answered(self, exchange: Exchange, response: bytes) -> None:
        """The server answered the oldest pending request of this call with OK."""
        if not exchange.tickets:
            return
        ticket = exchange.oldest()
        scope = ticket.scope
        try:
            created = response_handles(ticket.method, response)
        except Reject:
            log.warning("unparsable %s response: its handles stay unbound", ticket.method)
            created = ()
        try:
            for handle in created:
                scope = self._bind_created(ticket, handle) or scope
            if scope is not None and ticket.defines:
                self.table.add_functions(scope, ticket.defines, self._caps)
        except TableFull:
            log.warning("handle table full: the handles %s created stay unbound", ticket.method)
        if scope is not None and ticket.removes:
            self.table.remove_functions(scope, ticket.removes)
        for key in ticket.releases:
            self.table.forget(key)

    def _bind_created(self, ticket: Ticket, handle: Handle) -> Key | None:
        if handle.kind == "session":
            key: Key = ("session", handle.value)
            parent = None
        elif ticket.session is not None:
            key, parent = (handle.kind, f"{ticket.session}/{handle.value}"), (
                "session", ticket.session)
        else:
            return None
        if self.table.owner(key) not in (None, ticket.owner):
            return None  # the server reused a handle another caller holds: bind nothing
        self.table.put(key, ticket.owner, self._caps, parent)
        return key if handle.kind == "session" else None
