"""Which client metadata goes upstream, and the identity tfgate adds (forward stage, pure).

Never forwarded: credentials, connection-level headers, keys gRPC reserves for itself, the
configured `identity.strip_metadata` keys, and any client copy of the identity key; each
also in its `-bin` form. Then tfgate appends the verified principal under the identity key.
"""

from __future__ import annotations

from collections.abc import Sequence

from proxy import config

Metadata = tuple[tuple[str, str | bytes], ...]

CREDENTIAL_KEYS = frozenset({"authorization", "proxy-authorization", "cookie"})
HOP_BY_HOP_KEYS = frozenset({"connection", "keep-alive", "proxy-connection", "te",
                             "transfer-encoding", "upgrade", "host", "user-agent"})


class MetadataFilter:
    """Decides once per config which client metadata keys go upstream."""

    def __init__(self, identity: config.Identity) -> None:
        self._drop = CREDENTIAL_KEYS | HOP_BY_HOP_KEYS | {k.lower() for k in identity.strip_metadata}
        self._identity_key = identity.forward_metadata_key
        if self._identity_key:
            self._drop |= {self._identity_key}

    def upstream_metadata(self, metadata: Sequence[tuple[str, str | bytes]],
                          principal: str) -> Metadata:
        """`principal` is `Principal.display()`: already printable ASCII, sent as is."""
        kept = tuple((k, v) for k, v in metadata
                     if k.lower().removesuffix("-bin") not in self._drop
                     and not k.startswith((":", "grpc-")))
        if self._identity_key:
            kept += ((self._identity_key, principal),)
        return kept


def relayable(metadata: Sequence[tuple[str, str | bytes]] | None) -> Metadata:
    """Upstream metadata minus keys gRPC reserves for itself."""
    return tuple((k, v) for k, v in metadata or () if not k.startswith((":", "grpc-")))
