"""Input dtypes of a signature, for translated mode: learned from the upstream itself.

ModelServer's REST handler looks the dtypes up in the loaded SavedModel (GetInfoMap). A
gRPC upstream tells the same through GetModelMetadata, so tfgate asks it once per model
version and keeps the answer: `SignatureCache.inputs(target, signature)`.

Bounds: only calls the policy has already allowed get here (a caller cannot make tfgate
fetch metadata for models it may not use); at most `max_entries` models are kept (least
recently used dropped), each for `ttl_s` (a "latest" or label request follows a new version
within that time); concurrent requests for one model share one fetch; a failed fetch is not
kept. The fetch is tfgate's own call, made with tfgate's credentials to the upstream.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable

from proxy.call import ModelTarget
from proxy.errors import malformed
from proxy.pb import serving_responses_pb2 as pb
from proxy.rest.translate_in import metadata_request

Fetch = Callable[[bytes], Awaitable[bytes]]  # GetModelMetadataRequest -> response bytes
Inputs = dict[str, int]                       # alias -> DataType number


def parse_signatures(data: bytes) -> dict[str, Inputs]:
    """signature name -> its inputs, from GetModelMetadataResponse bytes."""
    response = pb.GetModelMetadataResponse.FromString(data)
    packed = response.metadata.get("signature_def")
    if packed is None or not packed.type_url.endswith("/tensorflow.serving.SignatureDefMap"):
        raise malformed("upstream metadata has no signature_def")
    defs = pb.SignatureDefMap.FromString(packed.value)
    return {name: {alias: info.dtype for alias, info in sig.inputs.items()}
            for name, sig in defs.signature_def.items()}


class SignatureCache:
    def __init__(self, fetch: Fetch, max_entries: int = 256, ttl_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._max = max_entries
        self._ttl = ttl_s
        self._clock = clock
        self._entries: collections.OrderedDict[tuple, tuple[float, dict[str, Inputs]]] = (
            collections.OrderedDict())
        self._pending: dict[tuple, asyncio.Future[dict[str, Inputs]]] = {}

    async def inputs(self, target: ModelTarget, signature: str) -> Inputs:
        signatures = await self._signatures(target)
        found = signatures.get(signature)
        if found is None:
            raise malformed(f'Serving signature name: "{signature[:128]}" not found in '
                            "signature def")
        return found

    async def _signatures(self, target: ModelTarget) -> dict[str, Inputs]:
        key = (target.name, target.version, target.label)
        entry = self._entries.get(key)
        if entry is not None and self._clock() - entry[0] < self._ttl:
            self._entries.move_to_end(key)
            return entry[1]
        pending = self._pending.get(key)
        if pending is None:
            # A task of its own: the caller that started it may leave (its client gone)
            # without cancelling the fetch the others wait for.
            pending = self._pending[key] = asyncio.ensure_future(self._load(key, target))
            pending.add_done_callback(_retrieved)
        return await asyncio.shield(pending)

    async def _load(self, key: tuple, target: ModelTarget) -> dict[str, Inputs]:
        try:
            signatures = parse_signatures(await self._fetch(metadata_request(target)))
        finally:
            self._pending.pop(key, None)
        self._entries[key] = (self._clock(), signatures)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return signatures


def _retrieved(task: asyncio.Future[dict[str, Inputs]]) -> None:
    """A failure nobody is left to await is not logged as unretrieved."""
    if not task.cancelled():
        task.exception()
