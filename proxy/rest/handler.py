"""One REST call, from its headers to its response: the same admission path as gRPC.

At headers time, before a byte of the body is read: the call counts against the
listener's bounds (`rest.max_calls`, calls per peer), the verified client certificate and
the headers (lowercase keys, `authorization` among them) become a `Request` for the gRPC
method the path stands for, and `admission.start` authenticates, routes, authorizes the
method and takes the caller's concurrency slot. A caller refused there never has its body
read: the refusal is sent and the connection closed (aiohttp buffers at most its read
buffer, 64 KiB, of what the client pushed meanwhile). `Expect: 100-continue` is answered
only after that.

Then the body, within `rest.receive_timeout_s` and the wire cap, counted against
`rest.max_buffered_bytes`; `judge.py` on the parse pool; `admission.judge` (the policy
over the facts, the size caps) and `admission.admit` (rate, upstream, headers, timeout);
the upstream. Every outcome is a `Call` record, counted and audited by `CallScope` as the
gRPC front's are, and every refusal is ModelServer's `{"error": message}` with the HTTP
status the reason has in `errors.STATUS`.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from typing import TYPE_CHECKING

from aiohttp import web

from proxy import admission
from proxy.admission import Request
from proxy.boundary import CallScope
from proxy.call import Facts, ModelTarget
from proxy.errors import HTTP_FOR_CODE, Code, Reason, Reject, malformed
from proxy.families import Method
from proxy.metadata import Metadata
from proxy.rest import body as bodies
from proxy.rest import errors, judge, visible
from proxy.rest.errors import too_large
from proxy.rest.paths import Route, route
from proxy.rest.upstream import Judged, Reply

if TYPE_CHECKING:
    from proxy.rest.server import RestServer

# HTTP framing and entity headers: they describe this hop's body, never the one forwarded.
_HOP_HEADERS = frozenset({
    "content-length", "content-type", "content-encoding", "accept-encoding", "expect",
    "trailer", "te", "transfer-encoding", "connection", "keep-alive", "upgrade", "host",
    "proxy-connection"})
_GRPC_KEY = re.compile(r"[0-9a-z_.-]{1,256}")
_PRINTABLE = re.compile(r"[ -~]*")
_CODE_FOR_HTTP = {status: code for code, status in reversed(HTTP_FOR_CODE.items())}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def peer_of(request: web.Request) -> str:
    """The peer as gRPC names it (`ipv4:1.2.3.4:5`, `ipv6:[::1]:5`, `unix:`), so the
    listener bounds and the audit read REST and gRPC peers alike."""
    name = request.transport.get_extra_info("peername") if request.transport else None
    if isinstance(name, tuple) and len(name) >= 2:
        host, port = name[0], name[1]
        return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
    return "unix:"


def certificate_of(request: web.Request) -> bytes | None:
    """The verified client certificate (PEM), as authentication reads it."""
    tls = request.transport.get_extra_info("ssl_object") if request.transport else None
    der = tls.getpeercert(binary_form=True) if tls is not None else None
    return ssl.DER_cert_to_PEM_cert(der).encode("ascii") if der else None


def upstream_headers(metadata: Metadata, translate: bool) -> tuple[tuple[str, str], ...]:
    """What admission let through, minus this hop's framing; for a gRPC upstream, only
    keys and values gRPC metadata can carry (no `-bin`: HTTP headers are text)."""
    kept = []
    for key, value in metadata:
        # `_` read as `-`, as CGI/WSGI-style servers and folding proxies read it (the
        # identity key is compared the same way, proxy/metadata.py)
        if key.replace("_", "-") in _HOP_HEADERS or not isinstance(value, str):
            continue
        if translate and (not _GRPC_KEY.fullmatch(key) or key.endswith("-bin")
                          or not _PRINTABLE.fullmatch(value)):
            continue
        kept.append((key, value))
    return tuple(kept)


def _cost(wire: int, encoding: str, rules: judge.BodyRules) -> int:
    """What judging a body costs, in bytes parsed: a compressed one is counted as what it
    may inflate to (JSON compresses about 10:1; the decoded cap bounds the rest)."""
    return wire if not encoding else min(wire * 32, rules.body.max_body_bytes)


class RestCall(CallScope):
    """One request; `serve` returns the reply or raises the Reject that refuses it."""

    def __init__(self, front: RestServer, request: web.Request) -> None:
        self.front = front
        self.route: Route | None = None
        self.refused: Reject | None = None
        try:
            self.route = route(request.method, request.raw_path)
            path = self.route.method_path
        except Reject as refused:  # audited as what was asked, kept short
            self.refused, path = refused, f"REST {request.method[:16]} {request.raw_path[:128]}"
        super().__init__(front.runtime, front.bounds, path, peer_of(request))
        self.body_read = False  # whether the connection may carry another request

    async def serve(self, request: web.Request) -> Reply:
        self.enter_peer()
        metadata = tuple((k.lower(), v) for k, v in request.headers.items())
        start = Request(self.call.method, metadata, certificate_of(request))
        if self.route is None:
            assert self.refused is not None
            self.call.principal = self.state.authenticator.authenticate(
                start.certificate, start.metadata)
            raise self.refused
        self.call.facts = judge.no_body(self.route)[1]  # the path names the model: audited
        method = admission.start(self.state, self.call, start, self.lease)
        judged, facts = await self._inspect(self.route, request)
        return await self._forward(method, judged, facts, start)

    async def _inspect(self, found: Route, request: web.Request) -> tuple[Judged, Facts]:
        if not found.has_body:
            if request.content_length or request.headers.get("Transfer-Encoding"):
                raise malformed(f"GET {found.verb} takes no body")
            self.body_read = True
            return judge.no_body(found)
        rules = judge.BodyRules.of(self.front.section_of(self.state))
        encoding = bodies.encoding_of(request.headers.getall("Content-Encoding", []))
        wire = await self._read(request, rules.body.max_wire_bytes)
        # A compressed body never runs inline: 1 KiB of gzip may be 16 MiB of JSON.
        cost, pool = _cost(len(wire), encoding, rules), self.front.pool
        received = judge.Received(found, wire, encoding, rules,
                                  off_loop=not pool.inline(cost, not encoding))
        return await pool.run(cost, judge.judge, received, may_inline=not encoding)

    async def _read(self, request: web.Request, cap: int) -> bytes:
        if request.content_length is not None and request.content_length > cap:
            raise too_large(f"body of {request.content_length} bytes > max {cap} "
                            "(rest.max_wire_bytes)")
        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(CONTINUE)
        chunks: list[bytes] = []
        size, timeout = 0, self.bounds.receive_timeout_s
        try:
            async with asyncio.timeout(timeout):
                async for chunk in request.content.iter_any():
                    size += len(chunk)
                    if size > cap:
                        raise too_large(f"body > max {cap} bytes (rest.max_wire_bytes)")
                    self.hold_bytes(len(chunk))
                    chunks.append(chunk)
        except TimeoutError:
            raise Reject(Reason.REQUEST_TIMEOUT, f"request body not received within "
                         f"{timeout:g} s (rest.receive_timeout_s)") from None
        self.body_read = True
        self.call.bytes_in, self.call.messages_in = size, 1
        return b"".join(chunks)

    async def _forward(self, method: Method, judged: Judged, facts: Facts,
                       start: Request) -> Reply:
        facts = admission.judge(self.state, self.call, method, facts)
        admitted = admission.admit(self.state, self.call, method, facts, start)
        if self.state.rest is None:
            raise Reject(Reason.NO_UPSTREAM, "the REST front has no upstreams in the running "
                         "config (rest: was removed; restart to stop the REST listener)")
        upstream = self.state.rest.get(admitted.upstream)
        headers = upstream_headers(admitted.metadata, self.state.rest.mode == "translate")
        reply = await upstream.send(judged, headers, admitted.timeout, self.front.pool.run)
        self.release_held()
        if 200 <= reply.status < 300 and facts.targets:  # any success, not just 200
            reply = await self._visible(method, judged.route.verb, facts.targets[0], reply)
        self._record(reply)
        return reply

    async def _visible(self, method: Method, verb: str, target: ModelTarget,
                       reply: Reply) -> Reply:
        """Only what the caller may see of a metadata or status answer, as on gRPC."""
        hide = visible.hider(verb, target, admission.grants(self.state, self.call, method))
        if hide is None:
            return reply
        run, size = self.front.pool.run, len(reply.body)
        doc = await run(size, visible.parse, reply.body)
        if not hide(doc):
            return reply
        return Reply(reply.status, await run(size, visible.dump, doc))

    def _record(self, reply: Reply) -> None:
        """An upstream's own error status is the call's outcome, as gRPC's would be; so
        is a redirect (ModelServer sends none, and it is never followed)."""
        call = self.call
        call.bytes_out, call.messages_out = len(reply.body), 1
        if reply.status >= 300:
            call.reason, call.code = Reason.UPSTREAM_STATUS, _CODE_FOR_HTTP.get(
                reply.status, Code.UNKNOWN)
            call.detail = f"upstream: HTTP {reply.status}"
            if reply.status == 503:
                call.reason = Reason.UPSTREAM_UNAVAILABLE


async def handle(front: RestServer, request: web.Request) -> web.StreamResponse:
    """Serve one request: the reply, or the refusal in ModelServer's error shape."""
    scope = RestCall(front, request)
    try:
        reply = await scope.serve(request)
    except asyncio.CancelledError:
        scope.outcome(asyncio.CancelledError())
        scope.call.http_status = 499
        scope.finish()
        raise
    except Exception as exc:  # noqa: BLE001 - outcome() logs what is not a Reject
        refusal = scope.outcome(exc)
        assert refusal is not None
        reply = Reply(refusal.http_status, errors.error_body(refusal.message))
    scope.call.http_status = reply.status
    scope.finish()
    response = web.Response(status=reply.status, body=reply.body,
                            content_type="application/json")
    if reply.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="tfgate"'
    if not scope.body_read:
        response.force_close()  # the unread body never is: the connection ends here
    return response
