"""tfgate's own per-call work alone, in this process: no sockets, no gRPC, no TLS.

    python -m bench.pipeline [--calls 20000] [--repeat 5] [--profile]

One allowed small Predict (the bench's 190-byte request, its token, its config: TLS +
JWT listener, two rules, default limits, identity forwarding, audit to a file) walks the
gRPC front's call path as `proxy/server.py` drives it: the call scope opens, the peer is
counted, admission starts (token from the cache, route, method authorized, concurrency
slot), the message is held, inspected and judged, admitted (rate, upstream, forwarded
metadata, timeout), the response is counted, and the scope finishes (lease, bounds,
counters, metrics, audit event). Only what grpc.aio does around it is missing: reading
metadata from the context and the forward itself.

Prints CPU µs per call (process time, best and median of `--repeat` runs of `--calls`
each) and, per stage, the µs each adds; `--profile` prints cProfile's top functions by
self time for one run. The number is stable to a few percent even on a shared box, so
it is the one to watch while changing the pipeline; `bench.percall` measures the whole
process (grpc and TLS included) against the bare forwarder.
"""

from __future__ import annotations

import argparse
import cProfile
import pathlib
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from bench import env as benv
from bench.loadgen import PREDICT

PEER = "ipv4:127.0.0.1:50123"


def _setup(directory: pathlib.Path):
    import yaml

    from proxy.config import Config
    from proxy.runtime import Runtime

    env = benv.make_env(directory)
    cfg = benv.proxy_config(env, "127.0.0.1:1", 0, mtls=False)
    path = benv.write_config(env, cfg, "pipeline")
    config = Config.model_validate(yaml.safe_load(path.read_text()),
                                   context={"base_dir": directory})
    runtime = Runtime.from_config(config)
    metadata = (("user-agent", "grpc-python/1.85 grpc-c/50"),
                ("authorization", f"Bearer {env.token}"), ("te", "trailers"))
    return env, runtime, metadata


STAGES = ("open", "start", "inspect", "admit", "finish")
_LABELS = {
    "open": "open the scope (State, Call record, in-flight gauge)",
    "start": "peer bound, authenticate (cached token), route, authorize, hold",
    "inspect": "hold bytes, parse, judge, size limits",
    "admit": "rate, upstream, forwarded metadata, timeout",
    "finish": "release, bounds, counters, metrics, audit event",
}


def _one_call(runtime, bounds, metadata, message: bytes, response: bytes,
              spent: list[float] | None = None) -> None:
    """One call as server._Boundary walks it; `spent` accumulates each stage's seconds
    (perf_counter) in STAGES order."""
    from proxy import admission
    from proxy.admission import Request
    from proxy.boundary import CallScope

    clock = time.perf_counter
    t0 = clock()
    scope = CallScope(runtime, bounds, PREDICT, PEER)
    t1 = clock()
    scope.enter_peer()
    request = Request(PREDICT, metadata, None, None, local=True)
    method = admission.start(scope.state, scope.call, request, scope.lease)
    t2 = clock()
    scope.hold_bytes(len(message))
    scope.call.bytes_in += len(message)
    scope.call.messages_in += 1
    facts = admission.inspect(scope.state, scope.call, method, message)
    t3 = clock()
    admitted = admission.admit(scope.state, scope.call, method, facts, request)
    scope.call.forwarded_at = time.monotonic()
    _ = scope.state.upstreams[admitted.upstream]
    scope.call.bytes_out += len(response)
    scope.call.messages_out += 1
    t4 = clock()
    scope.outcome(None)
    scope.finish()
    if spent is not None:
        t5 = clock()
        for i, (a, b) in enumerate(((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5))):
            spent[i] += b - a


def _timed(fn: Callable[[], None], calls: int, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.process_time()
        for _ in range(calls):
            fn()
        out.append((time.process_time() - t0) / calls * 1e6)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile one run")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)

    from proxy.bounds import Bounds

    with tempfile.TemporaryDirectory(prefix="tfgate-pipeline-") as tmp:
        env, runtime, metadata = _setup(pathlib.Path(tmp))
        bounds = Bounds(runtime.state.config.listen)
        try:
            def call() -> None:
                _one_call(runtime, bounds, metadata, env.small, env.response)
            _timed(call, min(2000, args.calls), 1)  # warm the caches
            whole = _timed(call, args.calls, args.repeat)
            print(f"pipeline CPU µs per call: best {min(whole):.1f}, median "
                  f"{statistics.median(whole):.1f} ({args.repeat} × {args.calls} calls)")
            runs = []
            for _ in range(args.repeat):
                spent = [0.0] * len(STAGES)
                for _ in range(args.calls):
                    _one_call(runtime, bounds, metadata, env.small, env.response, spent)
                runs.append(spent)
            print("per stage, µs (median of the runs; wall clock, timers included):")
            for i, name in enumerate(STAGES):
                us = statistics.median(run[i] for run in runs) / args.calls * 1e6
                print(f"  {name:8s} {us:6.1f}  {_LABELS[name]}")
            if args.profile:
                profiler = cProfile.Profile()
                profiler.enable()
                for _ in range(args.calls):
                    _one_call(runtime, bounds, metadata, env.small, env.response)
                profiler.disable()
                pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(
                    args.top)
        finally:
            runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
