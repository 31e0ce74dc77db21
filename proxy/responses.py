"""Responses that would tell a caller what it may not see are filtered (pure, bytes in, bytes
out; docs/wire-facts.md §1.2, §1.4).

- GetModelMetadata answers every signature of the model, whatever the request's
  `signature_name`: only the signatures the caller may call (some rule grants it a data
  method on that model, version and signature) are kept.
- GetModelStatus without a version or label answers every version: only the versions the
  caller may ask about are kept (a rule granting that version, `*`, or `latest` for the
  highest AVAILABLE version, the one "latest" serves; the highest listed if none is).
  With a version or label the server answers that one version, which the policy already
  judged.

A filtered response is re-serialized deterministically (map entries sorted); what tfgate
does not filter stays as the upstream's bytes (the views keep it opaque).
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.message import DecodeError, Message

from proxy.errors import Reason, Reject
from proxy.pb.responses_pb2 import MetadataResponseView, SignatureDefMapView, StatusResponseView

SIGNATURE_DEF_MAP = "type.googleapis.com/tensorflow.serving.SignatureDefMap"


def _parse(cls: type[Message], data: bytes) -> Message:
    try:
        return cls.FromString(data)
    except DecodeError:
        raise Reject(Reason.UPSTREAM_STATUS, "upstream sent an unreadable response",
                     detail="upstream response does not parse") from None


def metadata(data: bytes, visible: Callable[[str], bool]) -> bytes:
    """Keep the signatures `visible(name)` allows in a GetModelMetadataResponse."""
    response: MetadataResponseView = _parse(MetadataResponseView, data)
    packed = response.metadata.get("signature_def")
    if packed is None:
        return data
    # Any readers (Unpack, Is) compare only the name after the last '/': so does this.
    if packed.type_url.rpartition("/")[2] != SIGNATURE_DEF_MAP.rpartition("/")[2]:
        raise Reject(Reason.UPSTREAM_STATUS, "upstream sent an unreadable response",
                     detail=f"signature_def is packed as {packed.type_url[:128]!r}")
    signatures: SignatureDefMapView = _parse(SignatureDefMapView, packed.value)
    hidden = [name for name in signatures.signature_def if not visible(name)]
    if not hidden:
        return data
    for name in hidden:
        del signatures.signature_def[name]
    packed.value = signatures.SerializeToString(deterministic=True)
    return response.SerializeToString(deterministic=True)


AVAILABLE = 30  # ModelVersionStatus.State.AVAILABLE


def latest_version(versions: list[tuple[int, bool]]) -> int:
    """The version a request without one is served by: the highest AVAILABLE (as
    ModelServer resolves "latest"), or the highest listed when none is, so a `latest`
    grant shows the version it reaches, not a newer one still loading, failed or
    unloaded (which no grant of the caller's names)."""
    available = [v for v, ok in versions if ok]
    return max(available or [v for v, _ in versions])


def status(data: bytes, visible: Callable[[int, bool], bool]) -> bytes:
    """Keep the versions `visible(version, is_latest)` allows in a GetModelStatusResponse
    (`is_latest`: it is the version `latest_version` picks)."""
    response: StatusResponseView = _parse(StatusResponseView, data)
    entries = list(response.model_version_status)
    if not entries:
        return data
    latest = latest_version([(e.version, e.state == AVAILABLE) for e in entries])
    kept = [e.SerializeToString() for e in entries if visible(e.version, e.version == latest)]
    if len(kept) == len(entries):
        return data
    del response.model_version_status[:]
    for entry in kept:
        response.model_version_status.add().MergeFromString(entry)
    return response.SerializeToString(deterministic=True)
