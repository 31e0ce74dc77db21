"""Who created which distributed-TF handle: the memory behind `cluster_guard.py`.

An entry maps a handle tfgate saw created (a context, a session, a graph, a callable, a
partial run, a step) to the principal that created it, and, for a context or session,
holds the names of the functions that principal registered in it. Entries nest: a
session's graphs, callables, partial runs and steps, and a context's steps, go when it
goes. The table lives in `state.Shared`, so it outlives a config reload; it is this
process's memory only (cluster upstreams therefore run with `--workers 1`).

Memory is bounded in bytes, estimated per entry and per function name (`cluster.handles`
in the config): a principal past its own budget loses its least recently used entries
(the handles it created longest ago and has not used since); when the whole table is
full, entries idle longer than `idle_s` go, and if that is not enough `put` raises
`TableFull`, so a new handle is refused rather than someone else's forgotten.
Keys and owners are caller-chosen strings of bounded length (the inspector caps them).
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from proxy import config

Key = tuple[str, str]  # (kind, value); graph/callable/partial_run values are "session/value"
ENTRY_BYTES = 240      # one entry: its dict slots in three maps, the Entry, the key tuple
FUNCTION_BYTES = 90    # one function name in a set, besides its characters


class TableFull(Exception):
    """No room for a new entry, even after forgetting idle ones."""


@dataclass(slots=True)
class Entry:
    owner: str
    used: float
    size: int
    parent: Key | None = None
    children: set[Key] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)


class HandleTable:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()  # calls run on one loop thread; operators may read
        self._entries: dict[Key, Entry] = {}
        self._lru: collections.OrderedDict[Key, None] = collections.OrderedDict()
        self._owned: dict[str, collections.OrderedDict[Key, None]] = {}
        self._owner_bytes: dict[str, int] = {}
        self.bytes = 0

    # -- reading --------------------------------------------------------------------

    def owner(self, key: Key) -> str | None:
        """Who created `key` (None: no entry); a lookup counts as a use."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._touch(key, entry)
            return entry.owner

    def has_function(self, key: Key, name: str) -> bool:
        entry = self._entries.get(key)
        return entry is not None and name in entry.functions

    def keys_of(self, owner: str) -> list[Key]:
        """The handles `owner` holds, oldest use first (bearer values: never log them)."""
        with self._lock:
            return list(self._owned.get(owner, ()))

    def snapshot(self) -> tuple[int, int]:
        """(entries, estimated bytes) now; for tests and operators."""
        with self._lock:
            return len(self._entries), self.bytes

    # -- writing --------------------------------------------------------------------

    def put(self, key: Key, owner: str, caps: config.Handles, parent: Key | None = None) -> bool:
        """Record that `owner` created `key` (under `parent`, which must exist); a second
        put by the same owner only touches it. True when this put made the entry. The
        caller has checked the owner."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._touch(key, entry)
                return False
            owner = sys.intern(owner)
            size = ENTRY_BYTES + len(key[1])
            self._make_room(owner, size, caps, keep=(parent,) if parent else ())
            if parent is not None and parent not in self._entries:
                return False  # the parent was forgotten to make room: nothing to nest under
            self._entries[key] = Entry(owner, self._clock(), size, parent)
            if parent is not None:
                self._entries[parent].children.add(key)
            self._lru[key] = None
            self._owned.setdefault(owner, collections.OrderedDict())[key] = None
            self._account(owner, size)
            return True

    def add_functions(self, key: Key, names: Iterable[str], caps: config.Handles) -> int:
        """Record functions registered in `key`; how many were added. Names that do not
        fit the owner's budget are not recorded (their later use is refused)."""
        added = 0
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return 0
            self._touch(key, entry)
            for name in names:
                if name in entry.functions:
                    continue
                size = FUNCTION_BYTES + len(name)
                if entry.size + size > caps.max_bytes_per_principal:
                    break
                self._make_room(entry.owner, size, caps, keep=(key, entry.parent))
                if key not in self._entries:
                    break
                entry.functions.add(name)
                entry.size += size
                self._account(entry.owner, size)
                added += 1
        return added

    def remove_functions(self, key: Key, names: Iterable[str]) -> None:
        with self._lock:
            entry = self._entries.get(key)
            for name in names:
                if entry is not None and name in entry.functions:
                    entry.functions.discard(name)
                    size = FUNCTION_BYTES + len(name)
                    entry.size -= size
                    self._account(entry.owner, -size)

    def forget(self, key: Key) -> None:
        """Drop `key`, everything nested under it and its functions."""
        with self._lock:
            self._forget(key)

    # -- internals ------------------------------------------------------------------

    def _touch(self, key: Key, entry: Entry) -> None:
        entry.used = self._clock()
        self._lru.move_to_end(key)
        self._owned[entry.owner].move_to_end(key)

    def _account(self, owner: str, size: int) -> None:
        self._owner_bytes[owner] = self._owner_bytes.get(owner, 0) + size
        self.bytes += size

    def _make_room(self, owner: str, size: int, caps: config.Handles,
                   keep: tuple[Key | None, ...]) -> None:
        for key in keep:  # most recently used, so the owner's own eviction spares them
            entry = self._entries.get(key) if key else None
            if key and entry is not None:
                self._touch(key, entry)
        owned = self._owned.get(owner)
        while owned and self._owner_bytes.get(owner, 0) + size > caps.max_bytes_per_principal:
            victim = next(iter(owned))
            if victim in keep:
                break
            self._forget(victim)
        now = self._clock()
        while self.bytes + size > caps.max_bytes:
            oldest = next(iter(self._lru), None)
            if oldest is None or now - self._entries[oldest].used < caps.idle_s:
                raise TableFull(f"cluster.handles.max_bytes ({caps.max_bytes}) reached")
            self._forget(oldest)

    def _forget(self, key: Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        for child in list(entry.children):
            self._forget(child)
        if entry.parent is not None and entry.parent in self._entries:
            self._entries[entry.parent].children.discard(key)
        del self._lru[key]
        owned = self._owned[entry.owner]
        del owned[key]
        left = self._owner_bytes[entry.owner] - entry.size
        if owned:
            self._owner_bytes[entry.owner] = left
        else:
            del self._owned[entry.owner]
            del self._owner_bytes[entry.owner]
        self.bytes -= entry.size
