"""tfgate's own `grpc.health.v1.Health` (Check and Watch) on its gRPC listener.

The gRPC front answers these two paths itself, before admission: no credentials are
read, no rule is needed, nothing is forwarded, and the answer is tfgate's readiness
(readiness.py: a config loaded, not draining, every upstream reachable), not the
upstream's own health service (which ModelServer registers only on request). A probe
needs no token and no rule because a kubelet-style gRPC probe sends neither; the TLS
handshake is still the listener's, so under `client_auth: require` a prober needs a
certificate from the client CA (the kubelet's gRPC probe speaks plaintext only: use
the admin listener's `/readyz` for it, docs/operations.md). What an unauthenticated
caller learns is SERVING or NOT_SERVING, nothing else.

Only the overall service, `""`, is known; any other name gets NOT_FOUND (Check) or
SERVICE_UNKNOWN (Watch), as the health protocol says. Health calls meet the listener's
bounds (calls per peer and per process, the receive timeout, the byte budget), are not
audited (probes every few seconds would drown the audit log) and are counted in
`tfgate_health_checks_total`. A Watch holds a stream until the client leaves, so at
most `MAX_WATCHES` run per process; it re-reads readiness every `WATCH_POLL_S` (answers
come from the readiness cache) and writes only changes.

Reading the request is the one thing tfgate does for a caller before any credential: a
pending read lets gRPC take in the whole message the caller declares (up to
`listen.max_message_bytes`), not the 64 KiB window of an unread stream. So at most
`MAX_READS` health requests are being received at once per process (an honest one,
a few bytes, is received at once); more are refused with RESOURCE_EXHAUSTED before
their read is posted (docs/hostile-networks.md).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from proxy import metrics
from proxy.bounds import Bounds
from proxy.errors import Reason, Reject
from proxy.families.serving import HEALTH_SERVICE
from proxy.pb import serving_pb2
from proxy.readiness import Readiness

CHECK = HEALTH_SERVICE + "Check"
WATCH = HEALTH_SERVICE + "Watch"
PATHS = frozenset({CHECK, WATCH})

# grpc.health.v1.HealthCheckResponse.ServingStatus
SERVING, NOT_SERVING, SERVICE_UNKNOWN = 1, 2, 3
MAX_WATCHES = 256
MAX_READS = 8  # health requests being received at once, each up to max_message_bytes
WATCH_POLL_S = 1.0


def response(status: int) -> bytes:
    """HealthCheckResponse{status}: field 1, varint (every status fits one byte)."""
    return bytes((0x08, status))


class HealthService:
    def __init__(self, readiness: Readiness, bounds: Bounds) -> None:
        self.readiness = readiness
        self.bounds = bounds
        self.watches = 0
        self.reading = 0
        self.handlers: dict[str, grpc.RpcMethodHandler] = {
            CHECK: grpc.stream_unary_rpc_method_handler(self._check),
            WATCH: grpc.stream_stream_rpc_method_handler(self._watch),
        }

    async def _status(self) -> int:
        ready = await self.readiness.check()
        metrics.health_answered("grpc", ready.ok)
        return SERVING if ready.ok else NOT_SERVING

    async def _check(self, _: Any, context: grpc.aio.ServicerContext) -> bytes | None:
        try:
            async with _Bounded(self.bounds, context):
                if await self._service(context) != "":
                    await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
                return response(await self._status())
        except Reject as refused:
            await _abort(context, refused)
        return None

    async def _watch(self, _: Any, context: grpc.aio.ServicerContext) -> None:
        if self.watches >= MAX_WATCHES:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{MAX_WATCHES} health watches in flight")
        self.watches += 1
        try:
            async with _Bounded(self.bounds, context):
                known = await self._service(context) == ""
                last = None
                while True:
                    status = await self._status() if known else SERVICE_UNKNOWN
                    if status != last:
                        await context.write(response(status))
                        last = status
                    await asyncio.sleep(WATCH_POLL_S)
        except Reject as refused:
            await _abort(context, refused)
        finally:
            self.watches -= 1

    async def _service(self, context: grpc.aio.ServicerContext) -> str:
        """The request's service name, read within the listener's receive timeout."""
        timeout = self.bounds.receive_timeout_s
        if self.reading >= MAX_READS:
            raise Reject(Reason.OVERLOADED, f"{MAX_READS} health requests being received")
        self.reading += 1
        try:
            async with asyncio.timeout(timeout):
                message = await context.read()
        except TimeoutError:
            raise Reject(Reason.REQUEST_TIMEOUT, f"request message not received within "
                         f"{timeout:g} s (listen.receive_timeout_s)") from None
        finally:
            self.reading -= 1
        if message is grpc.aio.EOF:
            raise Reject(Reason.MALFORMED_REQUEST, "the call ended before its request message")
        self.bounds.release_bytes(self.bounds.hold_bytes(len(message)))
        try:
            return serving_pb2.HealthCheckRequest.FromString(message).service
        except DecodeError:
            raise Reject(Reason.MALFORMED_REQUEST, "not a HealthCheckRequest") from None


class _Bounded:
    """The call counts against the process and its peer while it lasts."""

    def __init__(self, bounds: Bounds, context: grpc.aio.ServicerContext) -> None:
        self.bounds = bounds
        self.peer = context.peer()
        self.host: str | None = None

    async def __aenter__(self) -> None:
        self.host = self.bounds.enter(self.peer)

    async def __aexit__(self, *_: object) -> None:
        if self.host is not None:
            self.bounds.leave(self.host)


async def _abort(context: grpc.aio.ServicerContext, refused: Reject) -> None:
    code = next(c for c in grpc.StatusCode if c.value[0] == int(refused.code))
    await context.abort(code, refused.message)
