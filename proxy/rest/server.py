"""A prototype HTTPS + mTLS listener for the REST front (aiohttp), around an `admit` callable.

Per request: route (paths.py, before any body byte is read) -> body under caps and a
deadline (body.py) -> JSON -> facts (facts.py / examples.py) -> `admit(principal inputs,
gRPC method path, Facts)` -> forward (upstream.py) -> reply. A `Reject` from any stage is
`{"error": message}` with the status from errors.py; anything else is a 500 that says
nothing about the request. `admit` is the caller's: the lead replaces the stub with the
transport-neutral admission path (authenticate, authorize, limits, audit).

Why aiohttp (bench/rest_http.py has the numbers): it runs in the caller's asyncio loop
(next to a grpc.aio server), the verified peer certificate of each connection is one call
away (`transport.get_extra_info("ssl_object")`), the body is a stream read here chunk by
chunk, and it caps the request line and header size (`max_line_size`, `max_field_size`,
`max_headers`) and idle time (`keepalive_timeout`, which also runs from the moment a
connection opens, so a client trickling its headers is closed). Connections are capped
here (`HttpLimits.max_connections`: a new one beyond is closed at once), the TLS handshake
by `handshake_timeout_s`, and the body by `body_timeout_s`.
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from proxy.call import Facts
from proxy.errors import Reject, malformed
from proxy.rest import body as bodies
from proxy.rest import errors
from proxy.rest.examples import examples_body, examples_facts
from proxy.rest.facts import predict_body, predict_facts
from proxy.rest.paths import Route, route
from proxy.rest.upstream import Judged, Reply

_JSON = "application/json"


@dataclass(frozen=True, slots=True)
class PrincipalInputs:
    """What authentication needs from the request: the verified client certificate (DER,
    None without one) and every `Authorization` header value, as sent."""

    peer_cert_der: bytes | None
    authorization: tuple[str, ...]
    peer: str


@dataclass(slots=True)
class Decision:
    """An allowed call: headers to add upstream (e.g. the verified identity), and a hook
    the server calls once with the final HTTP status (for audit and releasing leases)."""

    upstream_headers: tuple[tuple[str, str], ...] = ()
    finished: Callable[[int], None] | None = None


Admit = Callable[[PrincipalInputs, str, Facts], Decision | Awaitable[Decision]]


class Upstream(Protocol):
    async def send(self, judged: Judged, headers: tuple[tuple[str, str], ...] = ()) -> Reply: ...
    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_connections: int = 1024
    handshake_timeout_s: float = 10.0
    keepalive_s: float = 15.0        # idle time allowed, also before the first request
    body_timeout_s: float = 30.0     # to receive the whole body
    max_line_size: int = 8190        # request line and each header line
    max_field_size: int = 8190
    max_headers: int = 64
    body: bodies.BodyLimits = field(default_factory=bodies.BodyLimits)


def server_tls(cert: str, key: str, client_ca: str | None) -> ssl.SSLContext:
    """TLS 1.2+; with `client_ca`, a client certificate chaining to it is required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def principal_inputs(request: web.Request) -> PrincipalInputs:
    tls = request.transport.get_extra_info("ssl_object") if request.transport else None
    der = tls.getpeercert(binary_form=True) if tls is not None else None
    peer = request.remote or ""
    return PrincipalInputs(der, tuple(request.headers.getall("Authorization", ())), peer)


class RestFront:
    def __init__(self, admit: Admit, upstream: Upstream, limits: HttpLimits | None = None
                 ) -> None:
        self._admit = admit
        self._upstream = upstream
        self.limits = limits or HttpLimits()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        decision: Decision | None = None
        try:
            found = route(request.method, request.raw_path)
            judged, facts = await self._inspect(found, request)
            decision = await self._decide(principal_inputs(request), found.method_path, facts)
            reply = await self._upstream.send(judged, decision.upstream_headers)
        except Reject as refused:
            reply = Reply(errors.http_status(refused), errors.error_body(refused.message))
        except Exception:  # noqa: BLE001 - a bug must not leak details, nor hang the client
            reply = Reply(500, errors.error_body("internal error"))
        if decision is not None and decision.finished is not None:
            decision.finished(reply.status)
        return web.Response(status=reply.status, body=reply.body, content_type=_JSON)

    async def _decide(self, who: PrincipalInputs, method: str, facts: Facts) -> Decision:
        outcome = self._admit(who, method, facts)
        if inspect.isawaitable(outcome):
            outcome = await outcome
        return outcome

    async def _inspect(self, found: Route, request: web.Request) -> tuple[Judged, Facts]:
        if not found.has_body:
            if request.content_length or request.headers.get("Transfer-Encoding"):
                raise malformed(f"GET {found.verb} takes no body")
            return Judged(found, None), Facts(targets=(found.target,))
        data = await self._read(request)
        doc = bodies.parse_json(data)
        if found.verb == "predict":
            parsed = predict_body(doc)
            return Judged(found, parsed), predict_facts(found.target, parsed)
        parsed_examples = examples_body(doc)
        return Judged(found, parsed_examples), examples_facts(found.target, parsed_examples)

    async def _read(self, request: web.Request) -> bytes:
        encoding = bodies.encoding_of(request.headers.getall("Content-Encoding", []))
        reader = bodies.BodyReader(encoding, request.content_length, self.limits.body)
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                async for chunk in request.content.iter_any():
                    reader.feed(chunk)
        except TimeoutError:
            raise Reject(errors.Reason.MALFORMED_REQUEST,
                         f"body not received within {self.limits.body_timeout_s:g} s") from None
        return reader.finish()


class _Refuse(asyncio.Protocol):
    """A connection over `max_connections`: closed as soon as it is made."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()


@dataclass
class RunningRest:
    runner: web.AppRunner
    server: asyncio.base_events.Server
    front: RestFront

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.server.close()
        await self.runner.cleanup()


async def serve(front: RestFront, host: str, port: int, tls: ssl.SSLContext | None
                ) -> RunningRest:
    """Listen on host:port in the running loop (beside a grpc.aio server, if any)."""
    limits = front.limits
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", front.handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           keepalive_timeout=limits.keepalive_s,
                           max_line_size=limits.max_line_size,
                           max_field_size=limits.max_field_size, max_headers=limits.max_headers,
                           auto_decompress=False)  # body.py inflates, under its own cap
    await runner.setup()
    handlers = runner.server

    def connection() -> asyncio.Protocol:
        if len(handlers.connections) >= limits.max_connections:  # type: ignore[union-attr]
            return _Refuse()
        return handlers()  # type: ignore[misc]

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        connection, host, port, ssl=tls,
        ssl_handshake_timeout=limits.handshake_timeout_s if tls else None)
    return RunningRest(runner, server, front)


def allow_all(who: PrincipalInputs, method: str, facts: Facts) -> Decision:
    """A stub `admit` for tests and the benchmark: everything passes."""
    return Decision()
