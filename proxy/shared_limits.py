"""Limit state shared by the workers of one instance, so `--workers N` enforces one limit.

`SharedLimitState` keeps what `limits.LimitState` keeps (calls in flight per caller and in
total, token buckets) in one fixed-size file that every worker maps; `create` makes it (the
supervisor does, in a private directory, /dev/shm where there is one: memory, not disk).

Bounded: the file is a table of `sets` × `ways` slots, fixed when it is created. A caller's
entries (one for its calls in flight, one per rate bucket) live in the set a keyed 128-bit
BLAKE2b digest of its key picks; the key of that hash is random per instance, so callers
cannot choose names that crowd one set. A slot stores the whole digest, and a lookup
compares all of it: two callers share counts only if their digests collide (2^-128).
A new entry takes a free slot of its set, else one that holds nothing (no call in flight,
bucket refilled); if none, the caller is refused with `TABLE_FULL` (fail closed).

Dead workers: each slot counts calls in flight per worker (one column each), and only
worker i writes column i; a (re)started worker zeroes its column before serving, so the
calls of a worker that died are forgotten once the supervisor restarts it.

Locks: POSIX record locks (`fcntl.lockf`) on byte ranges of the file, one range per stripe
of sets plus one for the instance-wide total, taken in a fixed order (total, then stripes
ascending); a threading lock orders this process's threads (record locks are per process).
The kernel drops a dead process's locks. Token buckets use `time.monotonic()` values,
which all processes of one host share (CLOCK_MONOTONIC).
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

from proxy.config.limits import RateLimit
from proxy.counters import Counters
from proxy.limits import TABLE_FULL

MAGIC = b"TFGLIM01"
WAYS = 16                  # slots per set: a lookup scans one set
_HEADER = struct.Struct("<8sIII4x32sd")   # magic, ways, sets, workers, hash key, clock hint
_CLOCK = _HEADER.size - 8
_DIGEST = 16
_STRIPES = 64              # lock ranges; sets are spread over them
_TOTAL_LOCK = 0            # byte offset locked for the instance-wide total


def _align(n: int, to: int = 64) -> int:
    return -(-n // to) * to


def create(path: pathlib.Path, slots: int, workers: int) -> pathlib.Path:
    """Write an empty table of about `slots` entries for `workers` columns at `path`."""
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
    """Offsets: header (with one in-flight total per worker), then sets; a set is `ways`
    digests (contiguous, so one `find` scans them) then `ways` records. A slot is named
    by the offset of its digest (`at`) and of its record (`rec`)."""

    def __init__(self, ways: int, sets: int, workers: int) -> None:
        self.ways, self.sets, self.workers = ways, sets, workers
        self.record = struct.Struct(f"<ddd{workers}I")   # tokens, stamp, full_at, held[w]
        self.held = struct.Struct(f"<{workers}I")
        self.rec_size = _align(self.record.size, 8)
        self.totals = _HEADER.size
        self.first_set = _align(self.totals + 4 * workers)
        self.set_size = _align(ways * _DIGEST + ways * self.rec_size)
        self.size = self.first_set + sets * self.set_size

    def base(self, s: int) -> int:
        return self.first_set + s * self.set_size

    def rec(self, base: int, at: int) -> int:
        """The record of the slot whose digest is at `at` in the set at `base`."""
        return base + self.ways * _DIGEST + (at - base) // _DIGEST * self.rec_size


_U32 = struct.Struct("<I")
_D = struct.Struct("<d")
_BUCKET = struct.Struct("<ddd")   # tokens, stamp, full_at (when the bucket is full again)
_FREE = bytes(_DIGEST)


class SharedLimitState:
    """`LimitState`'s four methods over the shared table, as worker `worker` of the file's
    `workers`. `hits` counts this process's refusals only (metrics add them up)."""

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
        self._worker = worker
        self._column = 24 + 4 * worker                 # this worker's count in a record
        self._my_total = self._lay.totals + 4 * worker
        self._mutex = threading.Lock()
        # Callers this worker holds calls for, both ways (bounded by its calls in flight):
        # names for `snapshot`, digests so `release` need not hash again.
        self._names: dict[bytes, str] = {}
        self._digests: dict[str, tuple[bytes, int]] = {}
        self.hits = Counters()
        self._reclaim()

    # -- the four methods of LimitState ---------------------------------------------

    def hold(self, who: str, per_principal: int | None, total: int | None) -> str | None:
        """Take a slot for `who`; the name of the cap that refused, or None."""
        digest, s = self._digests.get(who) or self._locate(b"h\0" + _utf8(who))
        ranges = [_TOTAL_LOCK, 1 + s % _STRIPES] if total is not None else [1 + s % _STRIPES]
        self._lock(ranges)
        try:
            if total is not None and sum(self._lay.held.unpack_from(
                    self._mm, self._lay.totals)) >= total:
                return "concurrency.total"
            base = self._lay.base(s)
            at = self._find(base, digest)
            held = 0 if at is None else sum(self._held(base, at))
            if per_principal is not None and held >= per_principal:
                return "concurrency.per_principal"
            if at is None:
                at = self._claim(base, digest, self._clock(), ())
                if at is None:
                    return TABLE_FULL
            self._add_held(base, at, 1)
            self._names[digest] = who
            self._digests[who] = digest, s
            return None
        finally:
            self._unlock(ranges)

    def release(self, who: str) -> None:
        digest, s = self._digests.get(who) or self._locate(b"h\0" + _utf8(who))
        ranges = [1 + s % _STRIPES]
        self._lock(ranges)
        try:
            base = self._lay.base(s)
            at = self._find(base, digest)
            if at is not None and self._add_held(base, at, -1) == 0:
                self._names.pop(digest, None)
                self._digests.pop(who, None)
        finally:
            self._unlock(ranges)

    def take(self, who: str, buckets: list[tuple[str, RateLimit]], now: float) -> str | None:
        """A token from every bucket or from none; the bucket that refused, `TABLE_FULL`,
        or None."""
        wanted = [(key, rate, *self._locate(b"r\0" + _utf8(key) + b"\0" + _utf8(who)))
                  for key, rate in dict(buckets).items()]   # one token per bucket, named once
        ranges = self._ranges([s for *_, s in wanted])
        self._lock(ranges)
        try:
            self._see(now)
            found = []
            for key, rate, digest, s in wanted:
                base = self._lay.base(s)
                at = self._find(base, digest)
                tokens = float(rate.burst) if at is None else self._refill(base, at, rate, now)
                if tokens < 1.0:
                    return key
                found.append((base, digest, at, tokens - 1.0, rate))
            return self._spend(found, now)
        finally:
            self._unlock(ranges)

    def snapshot(self) -> tuple[int, dict[str, int]]:
        """(total, per caller) calls in flight in the whole instance. Callers this worker
        holds no call for are named by their digest (`#hex`): names are not stored."""
        per: dict[str, int] = {}
        for stripe in range(min(_STRIPES, self._lay.sets)):
            sets = range(stripe, self._lay.sets, _STRIPES)
            ranges = self._ranges(sets)
            self._lock(ranges)
            try:
                for base, at in self._slots(sets):
                    if n := sum(self._held(base, at)):
                        digest = self._mm[at:at + _DIGEST]
                        per[self._names.get(digest, "#" + digest.hex())] = n
            finally:
                self._unlock(ranges)
        return sum(self._lay.held.unpack_from(self._mm, self._lay.totals)), per

    def close(self) -> None:
        self._mm.close()
        os.close(self._fd)

    # -- buckets ----------------------------------------------------------------------

    def _refill(self, base: int, at: int, rate: RateLimit, now: float) -> float:
        tokens, stamp, _ = _BUCKET.unpack_from(self._mm, self._lay.rec(base, at))
        # max(0, ...): another worker may have stamped a `now` read just after ours
        return min(float(rate.burst), tokens + max(0.0, now - stamp) * rate.rate)

    def _spend(self, found: list[tuple[int, bytes, int | None, float, RateLimit]],
               now: float) -> str | None:
        """Write every bucket, claiming slots for new ones; none if one cannot be had.
        A slot this take uses is never evicted to make room for its other buckets."""
        used = {at for _, _, at, _, _ in found if at is not None}
        placed, claimed = [], []
        for base, digest, at, tokens, rate in found:
            if at is None:
                at = self._claim(base, digest, now, used)
                if at is None:
                    for undo in claimed:
                        self._free(*undo)
                    return TABLE_FULL
                used.add(at)
                claimed.append((base, at))
            placed.append((self._lay.rec(base, at), tokens, rate))
        for rec, tokens, rate in placed:
            stamp = max(now, _D.unpack_from(self._mm, rec + 8)[0])
            _BUCKET.pack_into(self._mm, rec, tokens, stamp, stamp + (rate.burst - tokens) / rate.rate)
        return None

    # -- slots ------------------------------------------------------------------------

    def _locate(self, key: bytes) -> tuple[bytes, int]:
        """The entry's digest (never all zero: that marks a free slot) and its set."""
        digest = hashlib.blake2b(key, digest_size=_DIGEST, key=self._key).digest()
        if digest == _FREE:
            digest = b"\1" + digest[1:]
        return digest, int.from_bytes(digest[8:], "little") % self._lay.sets

    def _find(self, base: int, digest: bytes) -> int | None:
        end = base + self._lay.ways * _DIGEST
        at = self._mm.find(digest, base, end)
        while at != -1 and (at - base) % _DIGEST:   # a match across two digests
            at = self._mm.find(digest, at + 1, end)
        return None if at == -1 else at

    def _claim(self, base: int, digest: bytes, now: float, keep: Collection[int]) -> int | None:
        """A slot in the set at `base` for a new entry: a free one, else one that holds
        nothing (no call in flight, bucket full again), but none of `keep`."""
        at = self._find(base, _FREE)
        if at is None:
            at = next((a for a in range(base, base + self._lay.ways * _DIGEST, _DIGEST)
                       if a not in keep and self._idle(base, a, now)), None)
            if at is None:
                return None
            self._free(base, at)
        self._mm[at:at + _DIGEST] = digest
        return at

    def _idle(self, base: int, at: int, now: float) -> bool:
        _, _, full_at, *held = self._lay.record.unpack_from(self._mm, self._lay.rec(base, at))
        return not any(held) and full_at <= now

    def _free(self, base: int, at: int) -> None:
        self._mm[at:at + _DIGEST] = _FREE
        rec = self._lay.rec(base, at)
        self._mm[rec:rec + self._lay.record.size] = bytes(self._lay.record.size)

    def _slots(self, sets: Iterable[int]) -> Iterator[tuple[int, int]]:
        for s in sets:
            base = self._lay.base(s)
            for at in range(base, base + self._lay.ways * _DIGEST, _DIGEST):
                if self._mm[at:at + _DIGEST] != _FREE:
                    yield base, at

    def _held(self, base: int, at: int) -> tuple[int, ...]:
        return self._lay.held.unpack_from(self._mm, self._lay.rec(base, at) + 24)

    def _add_held(self, base: int, at: int, delta: int) -> int:
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

    def _clock(self) -> float:
        """The latest `now` any take saw: when a hold may evict a refilled bucket."""
        return float(_D.unpack_from(self._mm, _CLOCK)[0])

    def _see(self, now: float) -> None:
        # Not under one lock for all: a lost update only delays an eviction to the next take.
        if now > self._clock():
            _D.pack_into(self._mm, _CLOCK, now)

    def _reclaim(self) -> None:
        """Forget what a previous process in this worker's place held: it is gone."""
        for stripe in range(min(_STRIPES, self._lay.sets)):
            sets = range(stripe, self._lay.sets, _STRIPES)
            ranges = self._ranges(sets)
            self._lock(ranges)
            try:
                for base, at in self._slots(sets):
                    _U32.pack_into(self._mm, self._lay.rec(base, at) + self._column, 0)
            finally:
                self._unlock(ranges)
        ranges = self._ranges((), total=True)
        self._lock(ranges)
        try:
            _U32.pack_into(self._mm, self._my_total, 0)
        finally:
            self._unlock(ranges)

    # -- locks ------------------------------------------------------------------------

    @staticmethod
    def _ranges(sets: Iterable[int], *, total: bool = False) -> list[int]:
        """The byte ranges to lock, in the one order every process uses (the total's
        first, then the stripes ascending), so that no two processes deadlock."""
        stripes = sorted({1 + s % _STRIPES for s in sets})
        return [_TOTAL_LOCK, *stripes] if total else stripes

    def _lock(self, ranges: list[int]) -> None:
        self._mutex.acquire()   # record locks are per process: order this process's threads
        taken = 0
        try:
            for start in ranges:
                fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, start)
                taken += 1
        except BaseException:
            self._unlock(ranges[:taken])
            raise

    def _unlock(self, ranges: list[int]) -> None:
        try:
            for start in reversed(ranges):
                fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, start)
        finally:
            self._mutex.release()


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")   # names from tokens may hold lone surrogates
