"""Where an admitted REST call goes: a REST upstream (native) or a gRPC one (translated).

Both take what was judged (`Judged`: the route and the parsed body), the headers admission
chose and the upstream timeout, and return a `Reply` (HTTP status, JSON bytes) for the
client. The CPU-heavy conversions (JSON out, protobuf in, JSON back) go through `offload`
(the front's parse pool), so a large body never stalls the event loop.

- `NativeUpstream`: POST/GET the canonical path and body (canonical.py) to ModelServer's
  REST port; its status and body come back as sent (bounded by the upstream's
  `max_message_bytes`). A connection failure or timeout is `upstream-unavailable`. The
  path is sent as written and a redirect is never followed (relayed without its
  `Location`, audited `upstream-status`): only the judged request reaches anyone.
- `TranslatedUpstream`: the same request as gRPC bytes (translate_in.py) on the gRPC
  front's own channel to that upstream (`forward.Upstream`), the answer as ModelServer's
  JSON (translate_out.py); a gRPC error is `{"error": details}` with the HTTP status
  ModelServer's REST gives its code, UNAVAILABLE without details (they name addresses).
- `RestUpstreams`: one of them per configured upstream, built with each State.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import grpc
import grpc.aio
import yarl

from proxy import config, forward
from proxy.errors import Code, ConfigError, Reason, Reject
from proxy.rest import canonical, translate_in, translate_out
from proxy.rest.examples import ExamplesBody
from proxy.rest.facts import PredictBody
from proxy.rest.paths import Route
from proxy.rest.signatures import SignatureCache
from proxy.routing import MethodTable

T = TypeVar("T")
Headers = tuple[tuple[str, str], ...]
# Run a CPU-heavy step (`size` bytes of work) off the event loop: (size, fn, arg) -> fn(arg)
Offload = Callable[[int, Callable[[Any], T], Any], Awaitable[T]]


@dataclass(frozen=True, slots=True)
class Judged:
    route: Route
    body: PredictBody | ExamplesBody | None  # None for GET (status, metadata)
    size: int = 0                            # body bytes judged (what conversions cost)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes


def _unavailable(detail: str) -> Reject:
    return Reject(Reason.UPSTREAM_UNAVAILABLE, "upstream unavailable", detail)


def canonical_body(body: PredictBody | ExamplesBody) -> bytes:
    if isinstance(body, PredictBody):
        return canonical.predict_json(body)
    return canonical.examples_json(body)


class NativeUpstream:
    def __init__(self, base_url: str, max_response_bytes: int,
                 tls: ssl.SSLContext | None = None, server_name: str | None = None) -> None:
        self._base = base_url.rstrip("/")
        self._max = max_response_bytes
        self._ssl: ssl.SSLContext | bool = tls if tls is not None else True
        self._server_name = server_name  # the name the upstream's certificate must show
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._loop = asyncio.get_running_loop()
            # No connection cap here: calls in flight are capped by rest.max_calls and
            # limits.concurrency; auto_decompress off: the body goes back as sent. No
            # cookie jar: this one session serves every caller, so a cookie the upstream
            # set for one would travel with the next caller's requests.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def send(self, judged: Judged, headers: Headers, timeout: float | None,
                   offload: Offload[bytes]) -> Reply:
        body = judged.body
        data = None if body is None else await offload(judged.size, canonical_body, body)
        # identity: the answer is relayed and filtered as bytes (aiohttp asks for gzip)
        out = (*headers, ("accept-encoding", "identity"))
        if data is not None:
            out += (("content-type", canonical.CONTENT_TYPE),)
        # Sent as written (encoded=True): yarl would otherwise re-normalize the judged
        # path (remove dot segments, decode %XX of unreserved characters).
        url = yarl.URL(self._base + judged.route.upstream_path(), encoded=True)
        try:
            # No redirects: following one would send the body, the headers and the
            # identity header to a path (or host) that was never judged.
            async with self._open().request(
                    "POST" if data is not None else "GET", url, data=data, headers=out,
                    allow_redirects=False, ssl=self._ssl, server_hostname=self._server_name,
                    timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                if r.content_length is not None and r.content_length > self._max:
                    raise _unavailable(f"upstream response of {r.content_length} bytes > "
                                       f"max {self._max}")
                return Reply(r.status, await self._body(r))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _unavailable(f"upstream REST call failed: {type(exc).__name__}: {exc}") from None

    async def _body(self, response: aiohttp.ClientResponse) -> bytes:
        """The whole answer, at most `max_message_bytes`. Read to its end: one read
        returns only what the socket had (a 200 cut after 64 KiB would be relayed)."""
        chunks, size = [], 0
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > self._max:
                raise _unavailable(f"upstream response > max {self._max} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        """Close from any thread; calls still on the session are cancelled."""
        session, loop, self._session = self._session, self._loop, None
        if session is not None and loop is not None and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(session.close(), loop)


class TranslatedUpstream:
    def __init__(self, upstream: forward.Upstream, methods: MethodTable,
                 metadata_timeout: float) -> None:
        self._upstream = upstream
        self._methods = methods
        self._metadata_timeout = metadata_timeout
        self.signatures = SignatureCache(self._metadata)

    async def _call(self, path: str, data: bytes, headers: Headers,
                    timeout: float | None) -> bytes:
        call = self._upstream.callable(self._methods.lookup(path))
        try:
            answer: bytes = await call(data, timeout=timeout, metadata=headers or None)
        except grpc.aio.AioRpcError as err:
            details = err.details() or ""
            if err.code() is grpc.StatusCode.UNAVAILABLE:
                raise _unavailable(f"upstream: {details}") from None
            raise Reject(Reason.UPSTREAM_STATUS, details, f"upstream: {details}",
                         upstream_code=Code(err.code().value[0])) from None
        return answer

    async def _metadata(self, data: bytes) -> bytes:
        return await self._call(translate_in.METADATA_METHOD, data, (), self._metadata_timeout)

    async def send(self, judged: Judged, headers: Headers, timeout: float | None,
                   offload: Offload[bytes]) -> Reply:
        route, body = judged.route, judged.body
        request = await self._request(route, body, judged.size, offload)
        answer = await self._call(route.method_path, request, headers, timeout)
        return Reply(200, await offload(len(answer), lambda a: self._response(route, body, a),
                                        answer))

    async def _request(self, route: Route, body: Any, size: int, offload: Offload[bytes]
                       ) -> bytes:
        target = route.target
        if route.verb == "predict":
            dtypes = await self.signatures.inputs(target, body.signature)
            return await offload(size, lambda b: translate_in.predict_request(target, b, dtypes),
                                 body)
        if route.verb in ("classify", "regress"):
            return translate_in.examples_request(target, body, route.verb == "classify")
        if route.verb == "metadata":
            return translate_in.metadata_request(target)
        return translate_in.status_request(target)

    @staticmethod
    def _response(route: Route, body: Any, answer: bytes) -> bytes:
        verb = route.verb
        if verb == "predict":
            return translate_out.predict_json(answer, body.row)
        if verb == "classify":
            return translate_out.classify_json(answer)
        if verb == "regress":
            return translate_out.regress_json(answer)
        if verb == "metadata":
            return translate_out.metadata_json(answer)
        return translate_out.status_json(answer)

    def close(self) -> None:
        pass  # the channel is the gRPC front's (`forward.Upstream`), closed with its State


Upstream = NativeUpstream | TranslatedUpstream


class RestUpstreams:
    """The REST front's upstreams of one config: native or translated, by upstream name."""

    def __init__(self, cfg: config.Config, grpc_upstreams: dict[str, forward.Upstream],
                 methods: MethodTable) -> None:
        assert cfg.rest is not None
        self.mode = cfg.rest.upstream
        self._by_name: dict[str, Upstream] = {}
        for name, up in cfg.upstreams.items():
            if self.mode == "translate" and name in grpc_upstreams:
                self._by_name[name] = TranslatedUpstream(grpc_upstreams[name], methods,
                                                         cfg.limits.deadline.default_s)
            elif self.mode == "native" and up.rest_address is not None:
                https = up.rest_address.startswith("https:")
                self._by_name[name] = NativeUpstream(
                    up.rest_address, up.max_message_bytes, _client_tls(name, up) if https
                    else None, up.tls.server_name if https and up.tls else None)

    def get(self, name: str) -> Upstream:
        found = self._by_name.get(name)
        if found is None:
            raise Reject(Reason.NO_UPSTREAM, f"upstream {name!r} has no REST address")
        return found

    def close(self) -> None:
        for upstream in self._by_name.values():
            upstream.close()


def _client_tls(name: str, up: config.Upstream) -> ssl.SSLContext:
    where = f"upstreams.{name}.tls"
    if up.tls is None:
        raise ConfigError(where, "required for an https rest_address (the CA to verify it)")
    try:
        context = ssl.create_default_context(cafile=str(up.tls.ca))
        if up.tls.cert is not None and up.tls.key is not None:
            context.load_cert_chain(str(up.tls.cert), str(up.tls.key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(where, f"cannot load: {exc}") from None
    return context
