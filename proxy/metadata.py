"""Which client metadata goes upstream, and the identity tfgate adds (forward stage, pure).

Never forwarded: credentials, connection-level headers, keys gRPC reserves for itself, the
configured `identity.strip_metadata` keys, and any client copy of the identity key; each
in any case, with `_` for `-`, and also in its `-bin` form. Then tfgate appends the verified principal under
the identity key.
"""

from __future__ import annotations

from collections.abc import Sequence

from proxy import config
from proxy.config.upstreams import CREDENTIAL_KEYS, HOP_BY_HOP_KEYS, metadata_base_key

Metadata = tuple[tuple[str, str | bytes], ...]

__all__ = ["CREDENTIAL_KEYS", "HOP_BY_HOP_KEYS", "Metadata", "MetadataFilter", "relayable"]


class MetadataFilter:
    """Decides once per config which client metadata keys go upstream. Keys compare by
    `metadata_base_key` (lowercase, `_` as `-`, `-bin` removed), on both sides: a strip
    entry `X-Secret-Bin` drops `x-secret`, `x_secret` and `x-secret-bin` alike."""

    def __init__(self, identity: config.Identity) -> None:
        self._drop = CREDENTIAL_KEYS | HOP_BY_HOP_KEYS | {
            metadata_base_key(k) for k in identity.strip_metadata}
        self._identity_key = identity.forward_metadata_key
        if self._identity_key:
            self._drop |= {metadata_base_key(self._identity_key)}

    def upstream_metadata(self, metadata: Sequence[tuple[str, str | bytes]],
                          principal: str) -> Metadata:
        """`principal` is `Principal.display()`: already printable ASCII, sent as is."""
        kept = tuple((k, v) for k, v in metadata
                     if (base := metadata_base_key(k)) not in self._drop
                     and not base.startswith((":", "grpc-")))
        if self._identity_key:
            kept += ((self._identity_key, principal),)
        return kept


def relayable(metadata: Sequence[tuple[str, str | bytes]] | None) -> Metadata:
    """Upstream metadata minus keys gRPC reserves for itself."""
    return tuple((k, v) for k, v in metadata or () if not k.startswith((":", "grpc-")))
