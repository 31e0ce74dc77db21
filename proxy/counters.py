"""Counts that outlive a config: calls by outcome, refusals by limit name."""

from __future__ import annotations

import collections
import threading


class Counters:
    """Thread-safe counts by key (a reason value or a limit name)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()

    def add(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
