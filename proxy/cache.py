"""A memo for pure per-call decisions whose keys hold caller-chosen strings.

Keys such as (principal, method, model, signature) come from requests, so the memo is
bounded twice: in entries and in the bytes of the strings its keys hold. When either
bound would be passed it starts over (empty): a cheap, amortized O(1) eviction that an
attacker inventing names can trigger but never turn into growth.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class Memo(Generic[V]):
    def __init__(self, max_entries: int = 4096, max_bytes: int = 4 << 20) -> None:
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._values: dict[Hashable, V] = {}

    def get(self, key: Hashable) -> V | None:
        return self._values.get(key)

    def put(self, key: Hashable, value: V, size: int) -> None:
        """Remember `value`; `size` is the bytes of caller-chosen text in `key`."""
        if size > self._max_bytes:
            return
        if len(self._values) >= self._max_entries or self._bytes + size > self._max_bytes:
            self._values.clear()
            self._bytes = 0
        self._values[key] = value
        self._bytes += size

    def __len__(self) -> int:
        return len(self._values)

    @property
    def bytes(self) -> int:
        return self._bytes
