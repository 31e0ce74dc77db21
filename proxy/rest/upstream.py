"""Where an admitted REST call goes: a REST upstream (native) or a gRPC one (translated).

Both take what was judged (`Judged`: the route and the parsed body) and return a `Reply`
(HTTP status, JSON bytes) for the client, never raising for an upstream's own error.

- `NativeUpstream`: POST/GET the canonical path and body (canonical.py) to ModelServer's
  REST port; its status and body come back as sent (bounded by `max_response_bytes`).
- `TranslatedUpstream`: the same request as gRPC bytes (translate_in.py) on a grpc.aio
  channel, the answer as ModelServer's JSON (translate_out.py), a gRPC error as
  `{"error": details}` with the status ModelServer's REST would give it (errors.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc

from proxy.errors import Code, Reason, Reject
from proxy.rest import canonical, errors, translate_in, translate_out
from proxy.rest.examples import ExamplesBody
from proxy.rest.facts import PredictBody
from proxy.rest.paths import Route
from proxy.rest.signatures import SignatureCache

MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class Judged:
    route: Route
    body: PredictBody | ExamplesBody | None  # None for GET (status, metadata)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes


def _unavailable(message: str) -> Reject:
    return Reject(Reason.UPSTREAM_UNAVAILABLE, message)


class NativeUpstream:
    def __init__(self, base_url: str, timeout_s: float = 60.0,
                 max_response_bytes: int = 64 * MiB, ssl: Any = None) -> None:
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max = max_response_bytes
        self._ssl = ssl
        self._session: aiohttp.ClientSession | None = None

    async def send(self, judged: Judged, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, auto_decompress=False)
        body = judged.body
        data = None if body is None else (canonical.predict_json(body)
                                          if isinstance(body, PredictBody)
                                          else canonical.examples_json(body))
        out = {"Content-Type": canonical.CONTENT_TYPE, **dict(headers)}
        url = self._base + judged.route.upstream_path()
        try:
            async with self._session.request("POST" if data is not None else "GET", url,
                                             data=data, headers=out, ssl=self._ssl) as r:
                if r.content_length is not None and r.content_length > self._max:
                    raise _unavailable("upstream response too large")
                payload = await r.content.read(self._max + 1)
                if len(payload) > self._max:
                    raise _unavailable("upstream response too large")
                return Reply(r.status, payload)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _unavailable(f"upstream REST call failed: {type(exc).__name__}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _identity(data: bytes) -> bytes:
    return data


class TranslatedUpstream:
    def __init__(self, channel: grpc.aio.Channel, timeout_s: float = 60.0,
                 signatures: SignatureCache | None = None) -> None:
        self._channel = channel
        self._timeout = timeout_s
        self.signatures = signatures or SignatureCache(self._metadata)

    async def _call(self, method: str, data: bytes,
                    headers: tuple[tuple[str, str], ...] = ()) -> bytes:
        call = self._channel.unary_unary(method, request_serializer=_identity,
                                         response_deserializer=_identity)
        return await call(data, timeout=self._timeout, metadata=headers or None)

    async def _metadata(self, data: bytes) -> bytes:
        return await self._call(translate_in.METADATA_METHOD, data)

    async def send(self, judged: Judged, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
        route, body = judged.route, judged.body
        try:
            request = await self._request(route, body)
            answer = await self._call(route.method_path, request, headers)
        except grpc.aio.AioRpcError as exc:
            status = errors.status_for_code(Code(exc.code().value[0]))
            return Reply(status, errors.error_body(exc.details() or ""))
        return Reply(200, self._response(route, body, answer))

    async def _request(self, route: Route, body: Any) -> bytes:
        target = route.target
        if route.verb == "predict":
            dtypes = await self.signatures.inputs(target, body.signature)
            return translate_in.predict_request(target, body, dtypes)
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

    async def close(self) -> None:
        await self._channel.close()
