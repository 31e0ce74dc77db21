"""Limit state shared by the workers of one instance, so `--workers N` enforces one limit.

`SharedLimitState` keeps what `limits.LimitState` keeps (calls in flight per caller and in
total, token buckets) in one fixed-size table that every worker maps (`shared_table.py`;
the supervisor creates it with `create`, in a private directory, /dev/shm where there is
one: memory, not disk).

Bounded: the table's size is fixed when it is created. A caller has one entry for its calls
in flight and one per rate bucket, each in the set that a keyed 128-bit BLAKE2b digest of
its key picks. The hash key is random per instance, so callers cannot choose names that
crowd one set. A slot stores the whole digest and a lookup compares all of it, so two
callers share counts only if their digests collide (2^-128). A new entry takes a free slot
of its set, else one that holds nothing (no call in flight, bucket refilled); if there is
none, the caller is refused with `TABLE_FULL` (fail closed).

Dead workers: every entry counts calls in flight per worker (one column each), and a
(re)started worker zeroes its column before serving, so the calls of a worker that died
are forgotten once the supervisor restarts it. Token buckets use `time.monotonic()`
values, which all processes of one host share (CLOCK_MONOTONIC).
"""

from __future__ import annotations

import pathlib

from proxy.config.limits import RateLimit
from proxy.counters import Counters
from proxy.limits import TABLE_FULL
from proxy.shared_table import SharedTable, create

__all__ = ["SharedLimitState", "create"]


class SharedLimitState:
    """`LimitState`'s four methods over the shared table, as worker `worker` of the
    `workers` it was created for. `hits` counts this process's refusals only."""

    def __init__(self, path: pathlib.Path | str, worker: int) -> None:
        self._table = SharedTable(path, worker)
        # Callers this worker holds calls for, both ways (bounded by its calls in flight):
        # names for `snapshot`, digests so that `release` need not hash again.
        self._names: dict[bytes, str] = {}
        self._digests: dict[str, tuple[bytes, int]] = {}
        self.hits = Counters()
        self._table.reclaim()

    def hold(self, who: str, per_principal: int | None, total: int | None) -> str | None:
        """Take a slot for `who`; the name of the cap that refused, or None."""
        t = self._table
        digest, base = self._digests.get(who) or t.locate(b"h\0" + _utf8(who))
        ranges = t.ranges((base,), total=total is not None)
        t.lock(ranges)
        try:
            if total is not None and t.total() >= total:
                return "concurrency.total"
            at = t.find(base, digest)
            if per_principal is not None and at is not None and sum(t.held(base, at)) >= per_principal:
                return "concurrency.per_principal"
            if at is None:
                at = t.claim(base, digest, t.clock())
                if at is None:
                    return TABLE_FULL
            t.add_held(base, at, 1)
            self._names[digest] = who
            self._digests[who] = digest, base
            return None
        finally:
            t.unlock(ranges)

    def release(self, who: str) -> None:
        t = self._table
        digest, base = self._digests.get(who) or t.locate(b"h\0" + _utf8(who))
        ranges = t.ranges((base,))
        t.lock(ranges)
        try:
            at = t.find(base, digest)
            if at is not None and t.add_held(base, at, -1) == 0:
                self._names.pop(digest, None)
                self._digests.pop(who, None)
        finally:
            t.unlock(ranges)

    def take(self, who: str, buckets: list[tuple[str, RateLimit]], now: float) -> str | None:
        """A token from every bucket or from none; the bucket that refused, `TABLE_FULL`,
        or None."""
        t = self._table
        wanted = [(key, rate, *t.locate(b"r\0" + _utf8(key) + b"\0" + _utf8(who)))
                  for key, rate in dict(buckets).items()]   # one token per bucket, named once
        ranges = t.ranges([base for *_, base in wanted])
        t.lock(ranges)
        try:
            t.see(now)
            found = []
            for key, rate, digest, base in wanted:
                at = t.find(base, digest)
                tokens = float(rate.burst) if at is None else self._refill(base, at, rate, now)
                if tokens < 1.0:
                    return key
                found.append((base, digest, at, tokens - 1.0, rate))
            return self._spend(found, now)
        finally:
            t.unlock(ranges)

    def snapshot(self) -> tuple[int, dict[str, int]]:
        """(total, per caller) calls in flight in the whole instance. Callers this worker
        holds no call for are named by their digest (`#hex`): names are not stored."""
        t, per = self._table, {}
        for stripe in t.stripes():
            t.lock([1 + stripe])
            try:
                for base, at, digest in t.used(stripe):
                    if n := sum(t.held(base, at)):
                        per[self._names.get(digest, "#" + digest.hex())] = n
            finally:
                t.unlock([1 + stripe])
        return t.total(), per

    def close(self) -> None:
        self._table.close()

    def _refill(self, base: int, at: int, rate: RateLimit, now: float) -> float:
        tokens, stamp = self._table.bucket(base, at)
        # max(0, ...): another worker may have stamped a `now` read just after ours
        return min(float(rate.burst), tokens + max(0.0, now - stamp) * rate.rate)

    def _spend(self, found: list[tuple[int, bytes, int | None, float, RateLimit]],
               now: float) -> str | None:
        """Write every bucket, claiming slots for new ones; none if one cannot be had.
        A slot this take uses is never evicted to make room for its other buckets."""
        t = self._table
        used = {at for _, _, at, _, _ in found if at is not None}
        placed: list[tuple[int, int, float, RateLimit]] = []
        claimed: list[tuple[int, int]] = []
        for base, digest, at, tokens, rate in found:
            if at is None:
                at = t.claim(base, digest, now, used)
                if at is None:
                    for undo in claimed:
                        t.free(*undo)
                    return TABLE_FULL
                used.add(at)
                claimed.append((base, at))
            placed.append((base, at, tokens, rate))
        for base, at, tokens, rate in placed:
            stamp = max(now, t.bucket(base, at)[1])
            t.set_bucket(base, at, tokens, stamp, stamp + (rate.burst - tokens) / rate.rate)
        return None


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")   # names from tokens may hold lone surrogates
