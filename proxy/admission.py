"""Admission: every check a call must pass before it may be forwarded, for any front.

    start:   authenticate → route → authorize the method → a concurrency slot
    inspect: parse a request message into Facts → judge: authorize them → size limits
    admit:   rate → upstream → upstream metadata and timeout

No transport here (no grpc import): a front (the gRPC server, the REST listener) hands
over a `Request`, what it knew when the call began, then the request messages, and gets
`Admitted` back or a `Reject`. A unary call runs start → inspect → admit; a client
stream runs start → admit, then recheck and inspect once per message before that
message may go on.
The method is authorized before any body is parsed, so a caller no rule lets call it
never costs a parse. `decide` is the same decision without credentials or a body, for
`tfgate explain`; a shadow policy (shadow.py) is decided beside the enforced one
wherever the enforced one is, and never changes the outcome.

Distributed-TF requests (`facts.cluster`) also pass `cluster_guard.py`: the handles and
functions they use must be the caller's (checked before policy, claimed after it), and
the front hands each response of such a call back through `answered`, so that what the
server created is bound to the caller. A front keeps one `Exchange` per call for that.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from proxy.call import Call, Facts, ModelTarget, Principal
from proxy.cluster_guard import Exchange
from proxy.errors import Reject
from proxy.families import Access, Kind, Method
from proxy.limits import Lease
from proxy.metadata import Metadata
from proxy.policy import Decision
from proxy.state import State

NO_FACTS = Facts()


@dataclass(frozen=True, slots=True)
class Request:
    """What a front knows when a call begins, before any message."""

    method: str                       # the gRPC method path (REST: its gRPC equivalent)
    metadata: Metadata                # client metadata / HTTP headers, lowercase keys
    certificate: bytes | None = None  # the peer's verified leaf certificate (PEM)
    deadline_s: float | None = None   # time left on the client's deadline; None: none
    local: bool = False               # came through `listen` (`listen.local_identity`'s)


@dataclass(frozen=True, slots=True)
class Admitted:
    """A call that passed every check: where it goes and with what metadata."""

    upstream: str
    metadata: Metadata
    timeout: float | None


def start(state: State, call: Call, request: Request, lease: Lease) -> Method:
    """Everything the headers alone decide. `lease` receives the concurrency slot; the
    front releases it when the call ends."""
    # The certificate part lands on the record before the token is checked: a call
    # refused for its token is audited with the certificate identity that verified.
    call.principal = state.authenticator.authenticate(
        request.certificate, request.metadata, lambda verified: _record(call, verified),
        local=request.local)
    method = state.methods.lookup(request.method)
    _authorize(state, call, method, NO_FACTS)
    state.limits.hold(call.principal, lease)
    return method


def recheck(state: State, call: Call, request: Request) -> None:
    """Each streamed message: the caller's credentials verified again, by
    `state` (cheap: both verdicts are cached), so an expired token or a reload that no
    longer trusts its issuer ends the stream UNAUTHENTICATED. A changed rendering of the
    caller is judged as such: its handles stay bound to the name that created them."""
    call.principal = state.authenticator.authenticate(
        request.certificate, request.metadata, local=request.local)


def inspect(state: State, call: Call, method: Method, message: bytes,
            exchange: Exchange | None = None) -> Facts:
    """One request message. `exchange`: the call's, for cluster methods (without one,
    the request is judged as if its call ended unanswered: nothing it creates or defines
    stays, so its later use is refused)."""
    return judge(state, call, method, method.inspect(message), exchange)


def judge(state: State, call: Call, method: Method, facts: Facts,
          exchange: Exchange | None = None) -> Facts:
    """Authorize a request's facts and check their sizes: `inspect` after parsing, and
    the REST front with the facts it read from JSON (the same policy and the same caps)."""
    call.facts = facts  # before any check: a refusal is audited with what it addressed
    ticket, unanswered = None, exchange is None
    if facts.cluster is not None:
        assert call.principal is not None  # start() ran
        exchange = exchange if exchange is not None else Exchange()
        call.note_ops([use.op for use in facts.cluster.ops])
        judged, ticket = state.cluster.check(call.principal.display(), method.path,
                                             facts.cluster, exchange)
        facts = dataclasses.replace(facts, cluster=judged)
    _authorize(state, call, method, facts)
    state.limits.check(facts)
    if ticket is not None:
        state.cluster.check_sizes(facts.cluster)  # type: ignore[arg-type]
        state.cluster.admit(ticket, exchange)  # type: ignore[arg-type]
        if unanswered:  # no call will answer it or end it: its ticket must not stay held
            ended(state, exchange)  # type: ignore[arg-type]
    return facts


def answered(state: State, exchange: Exchange, response: bytes) -> None:
    """A response the server sent with OK so far, for the oldest request of the call
    still awaiting one (cluster methods; nothing for others)."""
    if exchange.tickets:
        state.cluster.answered(exchange, response)


def ended(state: State, exchange: Exchange) -> None:
    """The call ended: what its unanswered requests claimed is released (cluster only)."""
    if exchange.tickets:
        state.cluster.abandon(exchange)


def admit(state: State, call: Call, method: Method, facts: Facts,
          request: Request) -> Admitted:
    assert call.principal is not None  # start() ran
    state.limits.admit(call.principal, facts)
    upstream = state.router.upstream_for(method, facts)
    call.upstream = upstream
    # Distributed-TF calls keep the client's deadline (none, from TF): RunStep, RunGraph,
    # RecvTensor and WaitQueueDone last as long as the computation they wait for.
    bounded = method.kind is Kind.UNARY_UNARY and method.family != "cluster"
    timeout = state.limits.timeout(request.deadline_s, unary=bounded)
    return Admitted(upstream, state.metadata.upstream_metadata(
        request.metadata, call.principal.display()), timeout)


class _Grants:
    def __init__(self, state: State, principal: Principal, method: Method) -> None:
        self._state, self._principal = state, principal
        self._data = [m.path for m in state.methods.methods.values()
                      if m.family == method.family and m.access is Access.DATA]

    def allows(self, path: str, target: ModelTarget) -> bool:
        return self._state.policy.decide(self._principal, path, Facts(targets=(target,))).allowed

    def any_data(self, target: ModelTarget) -> bool:
        return any(self.allows(path, target) for path in self._data)


def grants(state: State, call: Call, method: Method) -> _Grants:
    """What the policy grants this call's caller, asked while filtering an answer (the
    REST front filters ModelServer's JSON with it, proxy/rest/visible.py)."""
    assert call.principal is not None  # start() ran
    return _Grants(state, call.principal, method)


def respond(state: State, call: Call, method: Method, facts: Facts, response: bytes) -> bytes:
    """What the caller may see of the upstream's answer (`proxy/responses.py`)."""
    if method.respond is None or not facts.targets or call.principal is None:
        return response
    return method.respond(response, facts.targets[0], _Grants(state, call.principal, method))


def decide(state: State, principal: Principal, path: str, facts: Facts) -> Decision:
    """The decision for a described call: the credentials it must hold (a token where
    one is required), route, then policy (no credentials are verified, no body)."""
    try:
        state.authenticator.check_required(principal)
        method = state.methods.lookup(path)
    except Reject as refused:
        return Decision(False, refused.reason, None, refused.message)
    return state.policy.decide(principal, method.path, facts)


def _record(call: Call, principal: Principal) -> None:
    call.principal = principal


def decide_shadow(state: State, principal: Principal, path: str, facts: Facts) -> Decision | None:
    """The shadow policy's decision for a described call (None without a shadow policy)."""
    if state.shadow is None:
        return None
    try:
        method = state.methods.lookup(path)
    except Reject as refused:
        return Decision(False, refused.reason, None, refused.message)
    return state.shadow.policy.decide(principal, method.path, facts)


def _authorize(state: State, call: Call, method: Method, facts: Facts) -> None:
    decision = state.policy.decide(call.principal, method.path, facts)  # type: ignore[arg-type]
    call.rule = decision.rule
    if state.shadow is not None:
        state.shadow.compare(call, method.path, facts, decision)  # never raises
    if not decision.allowed:
        raise Reject(decision.reason, decision.message)

