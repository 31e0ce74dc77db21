"""A local OpenID issuer over HTTPS (aiohttp, TLS from the test PKI) for the JWKS tests:
serves a discovery document and a JWKS that a test can rotate, break or take down, and
counts every request per path. It runs on its own event loop in its own thread, apart
from tfgate's."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections import Counter
from typing import Any

from aiohttp import web


class Issuer:
    def __init__(self, cert: Any, *, tls: bool = True) -> None:
        self.keys: list[Any] = []      # SigningKeys whose public JWKs are served
        self.body: bytes | None = None  # served as /jwks instead of the keys, when set
        self.status = 200
        self.redirect: str | None = None
        self.down = False               # answer 503 to everything
        self.named_issuer: str | None = None  # overrides `issuer` in discovery
        self.hits: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        context = None
        if tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert.cert_path, cert.key_path)
        self._runner, port = asyncio.run_coroutine_threadsafe(
            self._start(context), self._loop).result(10)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"

    async def _start(self, context: ssl.SSLContext | None) -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        return runner, runner.addresses[0][1]

    def _refuse(self) -> web.Response | None:
        if self.down:
            return web.Response(status=503, text="down")
        return None

    async def _discovery(self, _: web.Request) -> web.Response:
        self.hits["discovery"] += 1
        return self._refuse() or web.json_response(
            {"issuer": self.named_issuer or self.url, "jwks_uri": self.url + "/jwks"})

    async def _jwks(self, _: web.Request) -> web.Response:
        self.hits["jwks"] += 1
        refused = self._refuse()
        if refused is not None:
            return refused
        if self.redirect is not None:
            raise web.HTTPFound(self.redirect)
        body = self.body if self.body is not None else json.dumps(
            {"keys": [k.public_jwk() for k in self.keys]}).encode()
        return web.Response(body=body, status=self.status, content_type="application/json")

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
