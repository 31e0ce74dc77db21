"""What the shared limit table costs per call, against the in-process LimitState.

    python -m bench.shared_limits [--calls 20000] [--processes 2]

Prints µs per operation (the median of 5 runs): the record-lock pair alone, a hold and
its release, one rate token; then the same hold + release loop run by `--processes`
processes on one table at once, each with its own caller and then all with one caller
(every process then contends for the same stripe lock).
"""

from __future__ import annotations

import argparse
import multiprocessing
import pathlib
import statistics
import tempfile
import time
from collections.abc import Callable

from proxy.config.limits import RateLimit
from proxy.limits import LimitState, LimitStore
from proxy.shared_limits import SharedLimitState, create

_RATE = [("", RateLimit(rate=1e9, burst=10))]


def _per_op(step: Callable[[int], object], calls: int) -> float:
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for i in range(calls):
            step(i)
        runs.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(runs)


def _hold_release(state: LimitStore, who: str) -> Callable[[int], object]:
    def step(_: int) -> None:
        state.hold(who, 32, None)
        state.release(who)
    return step


def _take(state: LimitStore) -> Callable[[int], object]:
    return lambda i: state.take("spiffe://bench/caller", _RATE, 1000.0 + i)


def _loop(path: str, worker: int, who: str, calls: int, start: object, out: object) -> None:
    state = SharedLimitState(path, worker)
    start.wait()  # type: ignore[attr-defined]
    out[worker] = _per_op(_hold_release(state, who), calls)  # type: ignore[index]


def _contended(path: pathlib.Path, processes: int, calls: int, same: bool) -> list[float]:
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(processes), ctx.Array("d", processes)
    procs = [ctx.Process(target=_loop, args=(str(path), w, "one" if same else f"c{w}",
                                             calls, start, out)) for w in range(processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return list(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/dev/shm" if pathlib.Path("/dev/shm").is_dir()
                                     else None) as tmp:
        path = create(pathlib.Path(tmp) / "limits", 65536, max(2, args.processes))
        shared, local = SharedLimitState(path, 0), LimitState()
        locks = _per_op(lambda _: (shared._table.lock([1]), shared._table.unlock([1])), args.calls)
        print(f"record lock + unlock (one stripe)     {locks:6.2f} µs")
        for name, state in (("LimitState", local), ("SharedLimitState", shared)):
            pair = _per_op(_hold_release(state, "spiffe://bench/caller"), args.calls)
            take = _per_op(_take(state), args.calls)
            print(f"{name:17} hold + release {pair:6.2f} µs   take {take:6.2f} µs")
        shared.close()
        for same in (False, True):
            per = _contended(path, args.processes, args.calls, same)
            what = "one caller" if same else "own callers"
            print(f"{args.processes} processes, {what:11} hold + release "
                  + "  ".join(f"{us:6.2f}" for us in per) + " µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
