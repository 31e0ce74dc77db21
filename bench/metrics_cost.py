"""What the metrics cost per call: `metrics.call_started` + `metrics.observe` on a
forwarded Predict, in one process and in multiprocess mode (as under --workers).

    python -m bench.metrics_cost [--calls 100000]

Prints µs per call, the median of 5 runs, for each mode. Multiprocess mode is chosen when
prometheus-client is imported, so each mode runs in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

PREDICT = "/tensorflow.serving.PredictionService/Predict"


def measure(calls: int) -> float:
    from proxy import metrics
    from proxy.call import Call, Facts, ModelTarget

    labels = metrics.Labels([PREDICT], ["half_plus_two"])
    facts = Facts(targets=(ModelTarget("half_plus_two"),))
    runs = []
    for _ in range(5):
        records = []
        for _ in range(calls):
            call = Call(PREDICT, "ipv4:127.0.0.1:1", facts=facts, upstream="serving")
            call.forwarded_at, call.ended = call.started + 1e-5, call.started + 1e-3
            records.append(call)
        start = time.perf_counter()
        for call in records:
            metrics.call_started()
            metrics.observe(call, labels)
        runs.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(f"{measure(args.calls):.2f}")
        return
    for mode in ("one process", "multiprocess"):
        with tempfile.TemporaryDirectory() as directory:
            env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
            if mode == "multiprocess":
                env["PROMETHEUS_MULTIPROC_DIR"] = directory
            out = subprocess.run([sys.executable, "-m", "bench.metrics_cost", "--child",
                                  "--calls", str(args.calls)], env=env, check=True,
                                 capture_output=True, text=True).stdout.strip()
        print(f"{mode}: {out} µs per call (call_started + observe)")


if __name__ == "__main__":
    main()
