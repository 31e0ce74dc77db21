"""What every call of every front must do at its end, whatever the transport.

A front opens a `CallScope` when a call's headers arrive: it takes the runtime's current
State (once: a reload never changes it under the call), starts the `Call` record and an
empty concurrency lease. While the call runs the scope counts its share of the
listener's bounds (`bounds.Bounds`: calls per peer, request bytes held). `outcome` turns
how the call ended into the record's reason and status, and `finish` frees everything the
call holds, counts its outcome, writes its audit event and leaves its State; each step
runs even when another fails. Only the mapping of a Reject to the transport's status
(grpc abort, an HTTP response) is the front's own.
"""

from __future__ import annotations

import asyncio
import time

from proxy import metrics, oplog, shadow
from proxy.bounds import Bounds
from proxy.call import Call
from proxy.errors import Code, Reason, Reject
from proxy.limits import Lease
from proxy.runtime import Runtime
from proxy.state import State

log = oplog.get_logger()


class CallScope:
    def __init__(self, runtime: Runtime, bounds: Bounds, method: str, peer: str) -> None:
        self.runtime = runtime
        self.bounds = bounds
        self.state: State = runtime.enter()
        self.call = Call(method, peer)
        metrics.call_started()  # ended by `_observe`
        self.lease = Lease()
        self._peer: str | None = None
        self._held = 0  # buffered request bytes this call counts against the budget

    def enter_peer(self) -> None:
        """Count the call against the process's and its peer address's share."""
        self._peer = self.bounds.enter(self.call.peer)

    def hold_bytes(self, size: int) -> None:
        """Count `size` more received request bytes until `release_held`."""
        self._held += self.bounds.hold_bytes(size)

    def release_held(self) -> None:
        held, self._held = self._held, 0
        if held:
            self.bounds.release_bytes(held)

    def outcome(self, exc: BaseException | None) -> Reject | None:
        """Record how the call ended; the Reject to answer with, if any. Anything
        unexpected is INTERNAL, and its details stay in the log and the audit."""
        call = self.call
        if exc is None:
            return None
        if isinstance(exc, asyncio.CancelledError | GeneratorExit):
            call.code, call.reason, call.detail = Code.CANCELLED, Reason.CANCELLED, "cancelled"
            return None
        if isinstance(exc, Reject):
            refusal = exc
        else:
            log.error("internal error", method=call.method, exc_info=exc)
            refusal = Reject(Reason.INTERNAL_ERROR, "internal error",
                             detail=f"{type(exc).__name__}: {exc}")
        call.code, call.reason, call.detail = refusal.code, refusal.reason, refusal.detail
        call.limit = getattr(refusal, "limit", None)  # limits.LimitExceeded names it
        return refusal

    def finish(self) -> None:
        """Free everything the call holds; each step runs even if another fails."""
        self.call.ended = time.monotonic()
        for step in (self.lease.release, self.release_held, self._leave_peer,
                     self._count, self._observe, self._audit):
            try:
                step()
            except Exception:
                log.exception("finishing a call failed", method=self.call.method)
        self.runtime.leave(self.state)

    def _leave_peer(self) -> None:
        peer, self._peer = self._peer, None
        if peer is not None:
            self.bounds.leave(peer)

    def _count(self) -> None:
        self.state.shared.outcomes.add(self.call.reason.value)

    def _observe(self) -> None:
        metrics.observe(self.call, self.state.labels)
        shadow.log_difference(self.call)

    def _audit(self) -> None:
        if self.state.audit is not None:
            self.state.audit.emit(self.call)
