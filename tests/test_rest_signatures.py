"""The translated REST mode's signature cache: one fetch per model version shared by the
calls that wait for it, and a caller that leaves does not take the others with it."""

from __future__ import annotations

import asyncio

from proxy.call import ModelTarget
from proxy.pb import serving_responses_pb2 as pb
from proxy.rest.signatures import SignatureCache


def metadata_answer() -> bytes:
    defs = pb.SignatureDefMap()
    defs.signature_def["serving_default"].inputs["x"].dtype = 1
    response = pb.GetModelMetadataResponse()
    packed = response.metadata["signature_def"]
    packed.type_url = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    packed.value = defs.SerializeToString()
    return response.SerializeToString()


def test_a_cancelled_caller_does_not_cancel_the_others_waiting_for_the_fetch() -> None:
    async def scenario() -> dict[str, int]:
        release = asyncio.Event()
        fetches = 0

        async def fetch(_: bytes) -> bytes:
            nonlocal fetches
            fetches += 1
            await release.wait()
            return metadata_answer()

        cache = SignatureCache(fetch)
        target = ModelTarget("m")
        first = asyncio.ensure_future(cache.inputs(target, "serving_default"))
        await asyncio.sleep(0)  # the first caller starts the fetch
        second = asyncio.ensure_future(cache.inputs(target, "serving_default"))
        await asyncio.sleep(0)
        first.cancel()  # its client went away
        await asyncio.sleep(0)
        release.set()
        found = await asyncio.wait_for(second, 10)
        assert first.cancelled() and fetches == 1
        return found

    assert asyncio.run(scenario()) == {"x": 1}
