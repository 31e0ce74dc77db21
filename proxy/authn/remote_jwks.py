"""An issuer's keys from a URL: fetched in the background, swapped in whole.

The token verifier stays synchronous: it reads `RemoteKeySet.keys`, a tuple replaced in
one assignment when a fetch succeeds, and never waits on the network. A background task
on the data plane's event loop (`loop.py`) fetches the JWKS (`jwks_url`, or the
`jwks_uri` of the issuer's OpenID Connect discovery document) at start, then every
`fetch.max_age_s`, and sooner when the verifier meets a key id the set lacks (`missing`),
at most once per `fetch.unknown_kid_cooldown_s` however many such tokens arrive. The
token that named the unknown key is refused at once (token-unknown-key); it passes once
the fetch has brought its key. A failed fetch keeps the last keys and is retried with
backoff; past `max_age_s + max_stale_s` since the last success the set is empty, and
the issuer's tokens are refused until a fetch succeeds again (fail closed).

A fetch has one timeout for all of it (discovery included), follows no redirects,
reads at most `fetch.max_bytes` (after decompression), and checks every key as a JWKS
file's keys are checked (jwks.py): one bad key refuses the whole response.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from proxy import config, metrics
from proxy.authn.jwks import VerificationKey, parse_jwks
from proxy.config.authn import check_fetch_url
from proxy.errors import ConfigError
from proxy.loop import LoopThread

log = logging.getLogger("tfgate")

_RETRY_S = 1.0  # first retry after a failed fetch; doubles up to max_age_s


class FetchError(Exception):
    pass


class RemoteKeySet:
    """The current keys of one issuer whose JWKS lives at a URL."""

    def __init__(self, issuer: config.Issuer, *, loop: LoopThread | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.issuer = issuer.issuer
        self._cfg = issuer.fetch
        self._jwks_url = issuer.jwks_url
        self._discovery = issuer.discovery_url() if issuer.discovery else None
        self._ssl = _tls_context(issuer)
        self._loop = loop or LoopThread.shared()
        self._clock = clock
        self._current: tuple[tuple[VerificationKey, ...], float | None] = ((), None)
        self._lock = threading.Lock()
        self._kid_fetch_after = float("-inf")
        self._first_done = threading.Event()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.fetches = 0  # attempts, for tests and logs

    # -- what the verifier reads (any thread) ---------------------------------------

    @property
    def keys(self) -> tuple[VerificationKey, ...]:
        """The keys, or none once they are older than max_age_s + max_stale_s."""
        keys, fetched = self._current
        if fetched is None or self._clock() - fetched > self._cfg.max_age_s + self._cfg.max_stale_s:
            return ()
        return keys

    def missing(self) -> None:
        """A token named a key the set lacks: fetch now unless one was asked for within
        the cooldown."""
        now = self._clock()
        with self._lock:
            if now < self._kid_fetch_after:
                return
            self._kid_fetch_after = now + self._cfg.unknown_kid_cooldown_s
        self._loop.loop.call_soon_threadsafe(self._poke)

    def seed(self, other: RemoteKeySet) -> None:
        """Start from another set's keys (a reload that changed only fetch settings)."""
        self._current = other._current

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._loop.loop.call_soon_threadsafe(self._spawn)

    def wait_first(self, timeout: float | None = None) -> bool:
        """Block (not on the loop) until the first fetch has finished, well or not; by
        default as long as one fetch may take."""
        return self._first_done.wait(self._cfg.timeout_s + 1 if timeout is None else timeout)

    def close(self) -> None:
        self._loop.loop.call_soon_threadsafe(self._cancel)

    def _spawn(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        failures = 0
        assert self._wake is not None
        while True:
            self._wake.clear()
            ok = await self.fetch_once()
            self._first_done.set()
            failures = 0 if ok else failures + 1
            delay = self._cfg.max_age_s if ok else min(self._cfg.max_age_s,
                                                       _RETRY_S * 2 ** (failures - 1))
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass

    # -- one fetch --------------------------------------------------------------------

    async def fetch_once(self) -> bool:
        """Fetch, check and swap in the keys; False (old keys kept) on any failure."""
        self.fetches += 1
        try:
            async with asyncio.timeout(self._cfg.timeout_s):
                keys = await self._fetch()
        except (FetchError, ConfigError, aiohttp.ClientError, TimeoutError, OSError,
                ValueError) as exc:
            log.warning("JWKS fetch for issuer %s failed, keeping the keys it had: %s",
                        self.issuer, exc or type(exc).__name__)
            metrics.jwks_fetched(self.issuer, False)
            return False
        self._current = (tuple(keys), self._clock())
        metrics.jwks_fetched(self.issuer, True)
        return True

    async def _fetch(self) -> list[VerificationKey]:
        connector = aiohttp.TCPConnector(ssl=self._ssl, limit=1, force_close=True)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=True) as session:
            url = self._jwks_url or await self._discover(session)
            data = await self._get_json(session, url)
        return parse_jwks(data, f"issuer {self.issuer}", url)

    async def _discover(self, session: aiohttp.ClientSession) -> str:
        assert self._discovery is not None
        document = await self._get_json(session, self._discovery)
        if not isinstance(document, dict):
            raise FetchError("discovery document is not a JSON object")
        # OpenID Connect Discovery §4.3: the document must name the issuer it was asked for.
        if document.get("issuer") != self.issuer:
            raise FetchError("discovery document names a different issuer")
        uri = document.get("jwks_uri")
        if not isinstance(uri, str):
            raise FetchError("discovery document has no jwks_uri")
        try:
            return check_fetch_url(uri)
        except ValueError as exc:
            raise FetchError(f"jwks_uri refused: {exc}") from None

    async def _get_json(self, session: aiohttp.ClientSession, url: str) -> Any:
        limit = self._cfg.max_bytes
        async with session.get(url, allow_redirects=False,
                               headers={"Accept": "application/json"}) as response:
            if response.status != 200:
                raise FetchError(f"{url}: HTTP {response.status}")
            if response.content_length is not None and response.content_length > limit:
                raise FetchError(f"{url}: {response.content_length} bytes > max {limit}")
            body = bytearray()
            async for chunk in response.content.iter_chunked(16384):
                body += chunk
                if len(body) > limit:
                    raise FetchError(f"{url}: more than {limit} bytes")
        try:
            return json.loads(body)
        except ValueError:
            raise FetchError(f"{url}: not JSON") from None


def _tls_context(issuer: config.Issuer) -> ssl.SSLContext:
    ca = issuer.fetch.ca
    try:
        return ssl.create_default_context(cafile=str(ca) if ca else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("authn.jwt.issuers.fetch.ca",
                          f"issuer {issuer.issuer}: cannot load {ca}: {exc}") from None


class KeySets:
    """Every remote key set of a process, shared by the States that use it, so that a
    reload keeps the keys (and their schedule) instead of fetching from nothing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sets: dict[tuple[Any, ...], tuple[RemoteKeySet, int]] = {}

    def acquire(self, issuer: config.Issuer) -> RemoteKeySet:
        key = (issuer.issuer, issuer.jwks_url, issuer.discovery, issuer.fetch)
        with self._lock:
            found = self._sets.get(key)
            if found is not None:
                self._sets[key] = (found[0], found[1] + 1)
                return found[0]
            made = RemoteKeySet(issuer)
            for (name, url, discovery, _), (other, _) in self._sets.items():
                if (name, url, discovery) == key[:3]:
                    made.seed(other)
            self._sets[key] = (made, 1)
        made.start()
        return made

    def release(self, keyset: RemoteKeySet) -> None:
        with self._lock:
            for key, (found, refs) in list(self._sets.items()):
                if found is keyset:
                    if refs > 1:
                        self._sets[key] = (found, refs - 1)
                    else:
                        del self._sets[key]
                        found.close()
                    return
