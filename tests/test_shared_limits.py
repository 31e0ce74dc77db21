"""Tests for proxy.shared_limits: the limit state every worker of one instance shares.

The semantics must be LimitState's: the same cases run against both (through a Limiter,
with a fake clock). Then what only a shared table has: real processes hammering one file
never exceed a cap, a full table evicts what holds nothing and else refuses, callers that
share a set never share counts, and a dead worker's calls are forgotten on its restart."""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from proxy.call import Facts, ModelTarget, Principal
from proxy.config.limits import Limits, RateLimit
from proxy.errors import Reason, Reject
from proxy.limits import TABLE_FULL, Lease, Limiter, LimitState, LimitStore
from proxy.shared_limits import SharedLimitState, create

ALICE = Principal(subject="alice", issuer="iss", has_token=True)
BOB = Principal(subject="bob", issuer="iss", has_token=True)
Store = Callable[[], LimitStore]


def shared_store(tmp_path: pathlib.Path, slots: int = 1024, workers: int = 2) -> SharedLimitState:
    path = create(tmp_path / f"limits-{len(list(tmp_path.iterdir()))}", slots, workers)
    return SharedLimitState(path, 0)


@pytest.fixture(params=["process", "shared"])
def store(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Store:
    if request.param == "process":
        return LimitState
    return lambda: shared_store(tmp_path)


def predict(model: str = "m") -> Facts:
    return Facts(targets=(ModelTarget(model, signature="serving_default"),))


def limiter(store: Store, clock: list[float] | None = None, **limits: Any) -> Limiter:
    now = clock if clock is not None else [0.0]
    return Limiter(Limits.model_validate(limits), store(), clock=lambda: now[0])


class TestSameAsLimitState:
    """Each case runs against LimitState and SharedLimitState."""

    def test_burst_then_refill(self, store: Store) -> None:
        clock = [100.0]
        lim = limiter(store, clock, rate={"rate": 2, "burst": 3},
                      concurrency={"per_principal": None})
        for _ in range(3):
            lim.admit(ALICE, predict())
        with pytest.raises(Reject, match=r"more than 2 calls/s \(burst 3\)"):
            lim.admit(ALICE, predict())
        clock[0] += 0.49
        with pytest.raises(Reject):
            lim.admit(ALICE, predict())
        clock[0] += 0.01
        lim.admit(ALICE, predict())
        clock[0] += 100
        for _ in range(3):  # refills up to burst, not beyond
            lim.admit(ALICE, predict())
        with pytest.raises(Reject):
            lim.admit(ALICE, predict())

    def test_buckets_per_principal(self, store: Store) -> None:
        lim = limiter(store, rate={"rate": 1, "burst": 1})
        lim.admit(ALICE, predict())
        lim.admit(BOB, predict())
        with pytest.raises(Reject):
            lim.admit(ALICE, predict())

    def test_per_model_bucket_all_or_nothing(self, store: Store) -> None:
        lim = limiter(store, rate={"rate": 1, "burst": 3},
                      models=[{"models": ["slow"], "rate": {"rate": 1, "burst": 1}}])
        lim.admit(ALICE, predict("slow"))
        with pytest.raises(Reject, match=r"\(models\[0\]\.rate\)"):
            lim.admit(ALICE, predict("slow"))
        lim.admit(ALICE, predict("fast"))   # the refusal took no global token
        lim.admit(ALICE, predict("fast"))
        with pytest.raises(Reject, match=r"\(rate\)"):
            lim.admit(ALICE, predict("fast"))
        assert lim.state.hits.snapshot() == {"models[0].rate": 1, "rate": 1}

    def test_concurrency_per_principal(self, store: Store) -> None:
        lim = limiter(store, concurrency={"per_principal": 2})
        leases = [Lease(), Lease()]
        for lease in leases:
            lim.hold(ALICE, lease)
        with pytest.raises(Reject, match="2 calls in flight for this principal") as info:
            lim.hold(ALICE, Lease())
        assert info.value.reason is Reason.CONCURRENCY_LIMITED
        lim.hold(BOB, Lease())
        leases[0].release()
        lim.hold(ALICE, Lease())

    def test_concurrency_total(self, store: Store) -> None:
        lim = limiter(store, concurrency={"per_principal": None, "total": 2})
        first, second = Lease(), Lease()
        lim.hold(ALICE, first)
        lim.hold(BOB, second)
        with pytest.raises(Reject, match=r"\(total\)"):
            lim.hold(Principal(subject="carol", issuer="i", has_token=True), Lease())
        second.release()
        lim.hold(ALICE, Lease())

    def test_snapshot_and_idempotent_release(self, store: Store) -> None:
        lim = limiter(store, concurrency={"per_principal": 1})
        lease = Lease()
        lim.hold(ALICE, lease)
        with pytest.raises(Reject):
            lim.hold(ALICE, Lease())   # refused: holds nothing
        assert lim.state.snapshot() == (1, {ALICE.limit_key(): 1})
        lease.release()
        lease.release()
        Lease().release()
        assert lim.state.snapshot() == (0, {})

    def test_threads_never_exceed_the_cap(self, store: Store) -> None:
        lim = limiter(store, concurrency={"per_principal": 5})
        admitted, refused, barrier = [], [], threading.Barrier(20)

        def attempt() -> None:
            barrier.wait()
            lease = Lease()
            try:
                lim.hold(ALICE, lease)
                admitted.append(lease)
            except Reject:
                refused.append(1)

        threads = [threading.Thread(target=attempt) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert (len(admitted), len(refused)) == (5, 15)


class TestTwoWorkers:
    """Two handles on one file, as two workers: each sees the other's calls and tokens."""

    def test_counts_and_buckets_are_shared(self, tmp_path: pathlib.Path) -> None:
        path = create(tmp_path / "limits", 64, 2)
        one, two = SharedLimitState(path, 0), SharedLimitState(path, 1)
        assert one.hold("alice", 2, None) is None
        assert two.hold("alice", 2, None) is None
        assert two.hold("alice", 2, None) == "concurrency.per_principal"
        assert one.hold("bob", None, 3) is None
        assert two.hold("carol", None, 3) == "concurrency.total"
        assert two.snapshot()[0] == 3
        one.release("alice")
        assert two.hold("alice", 2, None) is None
        bucket = [("", RateLimit(rate=1, burst=2))]
        assert one.take("alice", bucket, 10.0) is None
        assert two.take("alice", bucket, 10.0) is None
        assert one.take("alice", bucket, 10.0) == ""

    def test_a_release_frees_only_the_releasing_workers_calls(self, tmp_path: pathlib.Path) -> None:
        path = create(tmp_path / "limits", 64, 2)
        one, two = SharedLimitState(path, 0), SharedLimitState(path, 1)
        assert one.hold("alice", None, None) is None
        two.release("alice")   # worker two holds nothing for alice
        assert one.snapshot() == (1, {"alice": 1})


def _hammer(path: str, worker: int, rounds: int, counts: Any, peaks: Any, lock: Any,
            taken: Any, start: Any) -> None:
    """One worker process: hold/release as fast as it can, noting in `counts` (under
    `lock`) how many calls it believes are in flight; then take tokens."""
    state = SharedLimitState(path, worker)
    who = f"p{worker % 2}"
    start.wait()   # all at once, so that they contend
    for _ in range(rounds):
        if state.hold(who, 3, 4) is not None:
            continue
        with lock:   # counted after the hold and uncounted before the release:
            counts[worker % 2] += 1   # the witness never exceeds what the table holds
            peaks[worker % 2] = max(peaks[worker % 2], counts[worker % 2])
            peaks[2] = max(peaks[2], counts[0] + counts[1])
        with lock:
            counts[worker % 2] -= 1
        state.release(who)
    start.wait()
    bucket = [("", RateLimit(rate=1e-6, burst=BURST))]
    mine = sum(state.take("shared", bucket, time.monotonic()) is None for _ in range(rounds))
    with lock:
        taken.value += mine


BURST = 4000


def test_processes_hammering_one_file_never_exceed_the_caps(tmp_path: pathlib.Path) -> None:
    """4 processes, 2 callers: per_principal 3 and total 4 hold at every instant, every
    release is counted (the table ends empty), and a burst of tokens that the processes
    race for is spent exactly once."""
    workers = 4
    path = create(tmp_path / "limits", 1024, workers)
    ctx = multiprocessing.get_context("spawn")
    counts, peaks = ctx.Array("i", 2), ctx.Array("i", 3)
    lock, taken, start = ctx.Lock(), ctx.Value("i", 0), ctx.Barrier(workers)
    procs = [ctx.Process(target=_hammer,
                         args=(str(path), w, 3000, counts, peaks, lock, taken, start))
             for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert peaks[0] <= 3 and peaks[1] <= 3 and peaks[2] <= 4
    assert peaks[0] >= 1 and peaks[1] >= 1   # the witness saw calls at all
    assert taken.value == BURST
    assert SharedLimitState(path, 0).snapshot() == (0, {})


def _hold_and_die(path: str, worker: int) -> None:
    state = SharedLimitState(path, worker)
    for _ in range(3):
        assert state.hold("alice", 3, None) is None
    os._exit(0)   # no release: as if the worker crashed


def test_a_dead_workers_calls_are_forgotten_when_it_restarts(tmp_path: pathlib.Path) -> None:
    path = create(tmp_path / "limits", 64, 2)
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_hold_and_die, args=(str(path), 1))
    proc.start()
    proc.join(60)
    live = SharedLimitState(path, 0)
    total, per = live.snapshot()
    assert total == 3 and list(per.values()) == [3]   # named by digest: not ours
    assert live.hold("alice", 3, None) == "concurrency.per_principal"
    SharedLimitState(path, 1)   # the supervisor restarts worker 1
    assert live.snapshot() == (0, {})
    assert live.hold("alice", 3, None) is None


class TestFullTable:
    """A table of 4 slots in one set: a fifth entry needs one that holds nothing."""

    def test_holds_fill_it_and_releases_free_it(self, tmp_path: pathlib.Path) -> None:
        state = shared_store(tmp_path, slots=4)
        for who in "abcd":
            assert state.hold(who, 1, None) is None
        assert state.hold("e", 1, None) == TABLE_FULL
        assert state.snapshot() == (4, dict.fromkeys("abcd", 1))   # e counted nowhere
        state.release("b")
        assert state.hold("e", 1, None) is None
        assert state.hold("b", 1, None) == TABLE_FULL

    def test_buckets_are_evicted_once_refilled(self, tmp_path: pathlib.Path) -> None:
        state = shared_store(tmp_path, slots=4)
        bucket = [("", RateLimit(rate=1, burst=1))]
        for who in "abcd":
            assert state.take(who, bucket, 10.0) is None   # each full again at 11.0
        assert state.take("e", bucket, 10.5) == TABLE_FULL
        assert state.hold("e", 1, None) == TABLE_FULL
        assert state.take("e", bucket, 11.0) is None   # evicts a refilled bucket
        assert state.take("e", bucket, 11.0) == ""     # and e's own bucket is real
        assert state.hold("f", 1, None) is None        # a hold evicts refilled ones too

    def test_all_or_nothing_when_only_some_buckets_fit(self, tmp_path: pathlib.Path) -> None:
        state = shared_store(tmp_path, slots=4)
        slow = RateLimit(rate=1, burst=5)
        for who in "abc":
            assert state.take(who, [("", slow)], 0.0) is None
        two = [("", slow), ("models[0]", slow)]
        assert state.take("d", two, 0.0) == TABLE_FULL   # room for one of its two
        assert state.take("e", [("", slow)], 0.0) is None   # d's claim was undone

    def test_through_the_limiter(self, tmp_path: pathlib.Path) -> None:
        lim = Limiter(Limits.model_validate({"rate": {"rate": 1, "burst": 1}}),
                      shared_store(tmp_path, slots=1), clock=lambda: 0.0)
        lim.hold(ALICE, Lease())
        with pytest.raises(Reject, match="limits table full") as info:
            lim.hold(BOB, Lease())
        assert info.value.reason is Reason.CONCURRENCY_LIMITED
        with pytest.raises(Reject, match="limits table full") as info:
            lim.admit(BOB, predict())
        assert info.value.reason is Reason.RATE_LIMITED
        assert lim.state.hits.snapshot() == {TABLE_FULL: 2}

    def test_many_callers_do_not_grow_it(self, tmp_path: pathlib.Path) -> None:
        """Callers whose buckets have refilled make room for new ones; the file never grows."""
        path = create(tmp_path / "limits", 16, 2)
        size = path.stat().st_size
        state = SharedLimitState(path, 0)
        bucket = [("", RateLimit(rate=100, burst=1))]
        for i in range(2000):
            assert state.take(f"caller-{i}", bucket, i / 100) is None
        assert path.stat().st_size == size


class TestCollisions:
    """Entries that share a set never share counts."""

    def test_callers_in_one_set_keep_their_own_counts(self, tmp_path: pathlib.Path) -> None:
        state = shared_store(tmp_path, slots=3)   # one set: every caller collides on it
        assert state.hold("alice", 1, None) is None
        assert state.hold("bob", 1, None) is None
        assert state.hold("alice", 1, None) == "concurrency.per_principal"
        bucket = [("", RateLimit(rate=1e-6, burst=1))]
        assert state.take("alice", bucket, 0.0) is None
        assert state.take("carol", bucket, 0.0) == TABLE_FULL   # refused, not alice's

    def test_a_digest_spanning_two_slots_is_no_match(self, tmp_path: pathlib.Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
        """Digests sit side by side; bytes straddling two of them are nobody's."""
        state = shared_store(tmp_path, slots=3)
        row = bytes(range(1, 33))
        chosen = {b"h\0alice": row[:16], b"h\0bob": row[16:], b"h\0eve": row[8:24]}
        table = state._table
        base = table.locate(b"any")[1]   # the one set
        monkeypatch.setattr(table, "locate", lambda key: (chosen[key], base))
        assert state.hold("alice", 1, None) is None
        assert state.hold("bob", 1, None) is None
        assert state.hold("eve", 1, None) is None   # not counted as alice's or bob's
        assert state.snapshot() == (3, {"alice": 1, "bob": 1, "eve": 1})


class TestFile:
    def test_not_a_table(self, tmp_path: pathlib.Path) -> None:
        (tmp_path / "x").write_bytes(b"\0" * 8192)
        with pytest.raises(ValueError, match="not a tfgate limits table"):
            SharedLimitState(tmp_path / "x", 0)

    def test_worker_out_of_range(self, tmp_path: pathlib.Path) -> None:
        path = create(tmp_path / "limits", 64, 2)
        with pytest.raises(ValueError, match="out of range"):
            SharedLimitState(path, 2)

    def test_never_overwrites(self, tmp_path: pathlib.Path) -> None:
        path = create(tmp_path / "limits", 64, 2)
        with pytest.raises(FileExistsError):
            create(path, 64, 2)
