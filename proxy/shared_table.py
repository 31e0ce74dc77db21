"""The fixed-size table behind `shared_limits.SharedLimitState`: a file every worker of
one instance maps, its layout, its slots and its locks. It knows entries, counts and
stamps, not what a rate or a cap is.

Layout: a header (magic, shape, a random 32-byte hash key, the latest clock any take
saw, one in-flight total per worker), then `sets` sets of `ways` slots. A set holds its
`ways` 16-byte digests side by side (one `find` scans them), then their records:
tokens, stamp and full_at (float64: a rate bucket), and one u32 count of calls in flight
per worker (worker i writes only column i). An all-zero digest marks a free slot.

Locks: POSIX record locks (`fcntl.lockf`) on one byte of the file per stripe of sets
(64 stripes), and on byte 0 for the instance-wide total, always taken in one order (the
total's first, then stripes ascending) so that no two processes deadlock; the kernel
drops a dead process's locks. Record locks belong to a process, so a threading lock
orders this process's threads first.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import pathlib
import struct
import threading
from collections.abc import Collection, Iterable, Iterator

MAGIC = b"TFGLIM01"
WAYS = 16                  # slots per set: a lookup scans one set
_HEADER = struct.Struct("<8sIII4x32sd")   # magic, ways, sets, workers, hash key, clock hint
_CLOCK = _HEADER.size - 8
_DIGEST = 16
_STRIPES = 64              # lock ranges; sets are spread over them
_TOTAL_LOCK = 0             # byte offset locked for the instance-wide total
_U32 = struct.Struct("<I")
_D = struct.Struct("<d")
_BUCKET = struct.Struct("<ddd")   # tokens, stamp, full_at (when the bucket is full again)
_FREE = bytes(_DIGEST)


def _align(n: int, to: int = 64) -> int:
    return -(-n // to) * to


def create(path: pathlib.Path, slots: int, workers: int) -> pathlib.Path:
    """Write an empty table of about `slots` entries for `workers` columns at `path`
    (never over an existing file)."""
    if slots < 1 or workers < 1:
        raise ValueError("slots and workers must be at least 1")
    ways = min(WAYS, slots)
    sets = -(-slots // ways)
    header = _HEADER.pack(MAGIC, ways, sets, workers, os.urandom(32), 0.0)
    size = _Layout(ways, sets, workers).size
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)   # zero-filled: every slot free, every count 0
        os.pwrite(fd, header, 0)
    finally:
        os.close(fd)
    return path


class _Layout:
    """Offsets. A slot is named by the offset of its digest (`at`) in its set (`base`)."""

    def __init__(self, ways: int, sets: int, workers: int) -> None:
        self.ways, self.sets, self.workers = ways, sets, workers
        self.record = struct.Struct(f"<ddd{workers}I")   # tokens, stamp, full_at, held[w]
        self.held = struct.Struct(f"<{workers}I")
        self.rec_size = _align(self.record.size, 8)
        self.totals = _HEADER.size
        self.first_set = _align(self.totals + 4 * workers)
        self.set_size = _align(ways * _DIGEST + ways * self.rec_size)
        self.size = self.first_set + sets * self.set_size

    def rec(self, base: int, at: int) -> int:
        """The record of the slot whose digest is at `at` in the set at `base`."""
        return base + self.ways * _DIGEST + (at - base) // _DIGEST * self.rec_size


class SharedTable:
    """The table file mapped by worker `worker` of the `workers` it was created for."""

    def __init__(self, path: pathlib.Path | str, worker: int) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self._mm = mmap.mmap(self._fd, 0)
            magic, ways, sets, workers, self._key, _ = _HEADER.unpack_from(self._mm, 0)
            if magic != MAGIC:
                raise ValueError(f"{path}: not a tfgate limits table")
            self._lay = _Layout(ways, sets, workers)
            if len(self._mm) != self._lay.size:
                raise ValueError(f"{path}: size {len(self._mm)} != {self._lay.size}")
            if not 0 <= worker < workers:
                raise ValueError(f"worker {worker} out of range: the table has {workers}")
        except BaseException:
            os.close(self._fd)
            raise
        self.worker = worker
        self._column = 24 + 4 * worker                 # this worker's count in a record
        self._my_total = self._lay.totals + 4 * worker
        self._mutex = threading.Lock()

    def close(self) -> None:
        self._mm.close()
        os.close(self._fd)

    # -- finding and claiming slots ---------------------------------------------------

    def locate(self, key: bytes) -> tuple[bytes, int]:
        """An entry's keyed digest (never all zero) and the offset of its set."""
        digest = hashlib.blake2b(key, digest_size=_DIGEST, key=self._key).digest()
        if digest == _FREE:
            digest = b"\1" + digest[1:]
        s = int.from_bytes(digest[8:], "little") % self._lay.sets
        return digest, self._lay.first_set + s * self._lay.set_size

    def find(self, base: int, digest: bytes) -> int | None:
        """The slot holding exactly `digest` in the set at `base`, or None."""
        end = base + self._lay.ways * _DIGEST
        at = self._mm.find(digest, base, end)
        while at != -1 and (at - base) % _DIGEST:   # a match across two digests
            at = self._mm.find(digest, at + 1, end)
        return None if at == -1 else at

    def claim(self, base: int, digest: bytes, now: float, keep: Collection[int] = ()) -> int | None:
        """A slot for a new entry: a free one, else one that holds nothing (no call in
        flight, bucket full again at `now`) other than `keep`; None if the set is full."""
        at = self.find(base, _FREE)
        if at is None:
            at = next((a for a in range(base, base + self._lay.ways * _DIGEST, _DIGEST)
                       if a not in keep and self._idle(base, a, now)), None)
            if at is None:
                return None
            self.free(base, at)
        self._mm[at:at + _DIGEST] = digest
        return at

    def _idle(self, base: int, at: int, now: float) -> bool:
        _, _, full_at, *held = self._lay.record.unpack_from(self._mm, self._lay.rec(base, at))
        return not any(held) and full_at <= now

    def free(self, base: int, at: int) -> None:
        self._mm[at:at + _DIGEST] = _FREE
        rec = self._lay.rec(base, at)
        self._mm[rec:rec + self._lay.record.size] = bytes(self._lay.record.size)

    def used(self, stripe: int) -> Iterator[tuple[int, int, bytes]]:
        """(base, at, digest) of every used slot of a stripe's sets (lock it first)."""
        for s in range(stripe, self._lay.sets, _STRIPES):
            base = self._lay.first_set + s * self._lay.set_size
            for at in range(base, base + self._lay.ways * _DIGEST, _DIGEST):
                if (digest := self._mm[at:at + _DIGEST]) != _FREE:
                    yield base, at, digest

    # -- counts and buckets -----------------------------------------------------------

    def held(self, base: int, at: int) -> tuple[int, ...]:
        """Calls in flight for a slot, per worker."""
        return self._lay.held.unpack_from(self._mm, self._lay.rec(base, at) + 24)

    def add_held(self, base: int, at: int, delta: int) -> int:
        """Change this worker's count for a slot, and its total; its count after (never
        below 0: releasing what this worker does not hold changes nothing)."""
        where = self._lay.rec(base, at) + self._column
        mine = _U32.unpack_from(self._mm, where)[0] + delta
        if mine < 0:
            return 0
        _U32.pack_into(self._mm, where, mine)
        total = _U32.unpack_from(self._mm, self._my_total)[0]
        _U32.pack_into(self._mm, self._my_total, max(0, total + delta))
        return mine

    def total(self) -> int:
        """Calls in flight in the whole instance."""
        return sum(self._lay.held.unpack_from(self._mm, self._lay.totals))

    def bucket(self, base: int, at: int) -> tuple[float, float]:
        tokens, stamp, _ = _BUCKET.unpack_from(self._mm, self._lay.rec(base, at))
        return tokens, stamp

    def set_bucket(self, base: int, at: int, tokens: float, stamp: float, full_at: float) -> None:
        _BUCKET.pack_into(self._mm, self._lay.rec(base, at), tokens, stamp, full_at)

    def clock(self) -> float:
        """The latest `now` any take saw: when a hold may evict a refilled bucket."""
        return float(_D.unpack_from(self._mm, _CLOCK)[0])

    def see(self, now: float) -> None:
        # Not under one lock for all: a lost update only delays an eviction to the next take.
        if now > self.clock():
            _D.pack_into(self._mm, _CLOCK, now)

    def reclaim(self) -> None:
        """Zero this worker's counts: a previous process in its place is gone."""
        for stripe in self.stripes():
            self.lock([1 + stripe])
            try:
                for base, at, _ in self.used(stripe):
                    _U32.pack_into(self._mm, self._lay.rec(base, at) + self._column, 0)
            finally:
                self.unlock([1 + stripe])
        self.lock([_TOTAL_LOCK])
        try:
            _U32.pack_into(self._mm, self._my_total, 0)
        finally:
            self.unlock([_TOTAL_LOCK])

    # -- locks ------------------------------------------------------------------------

    def stripes(self) -> range:
        return range(min(_STRIPES, self._lay.sets))

    def ranges(self, bases: Iterable[int], *, total: bool = False) -> list[int]:
        """The byte ranges guarding these sets (and the total), in the one order every
        process takes them."""
        stripes = sorted({1 + (b - self._lay.first_set) // self._lay.set_size % _STRIPES
                          for b in bases})
        return [_TOTAL_LOCK, *stripes] if total else stripes

    def lock(self, ranges: list[int]) -> None:
        self._mutex.acquire()
        taken = 0
        try:
            for start in ranges:
                fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, start)
                taken += 1
        except BaseException:
            self.unlock(ranges[:taken])
            raise

    def unlock(self, ranges: list[int]) -> None:
        try:
            for start in reversed(ranges):
                fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, start)
        finally:
            self._mutex.release()
