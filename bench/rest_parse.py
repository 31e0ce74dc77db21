"""Where the REST front parses large bodies: on the event loop, or on its parse threads.

    python -m bench.rest_parse [--probes 300] [--big-mib 4] [--loaders 1] [--pause-s 0.5]
                               [--layout pinned]

One tfgate (`tfgate serve`, REST native, plaintext on loopback, JWT) in front of the bench's
REST backend, run twice: `rest.parse.threads: 0` (every body parsed on the event loop) and
the default (2 threads, bodies of 64 KiB and more off the loop). In each, a probe client
sends small predicts one at a time, first alone, then while `--loaders` other processes
send `--big-mib` MiB predict bodies, pausing `--pause-s` between them (so the core is
not saturated: what is measured is the stall one big body causes, not queueing). Output
per run: the probe's p50/p99/max latency (what every other caller of the process feels)
and the big calls' count and mean latency. With `--layout pinned` tfgate runs alone on the second CPU.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pathlib
import random
import statistics
import tempfile
import time
from typing import Any

import httpx

from bench import env as benv
from bench.procs import Service

PATH = "/v1/models/bench:predict"
SMALL = json.dumps({"instances": [1.0, 2.0, 5.0]}).encode()


def big_body(mib: float) -> bytes:
    rows, row = [], [round(random.random(), 6) for _ in range(64)]
    size = 0
    while size < mib * (1 << 20):
        rows.append(row)
        size += len(json.dumps(row)) + 1
    return json.dumps({"instances": rows}).encode()


def tfgate_config(env: benv.Env, backend: str, rest_port: int, threads: int) -> dict:
    cfg = benv.proxy_config(env, "127.0.0.1:1", benv.free_port(), 0, mtls=False)
    cfg["upstreams"]["bench"] = {"address": "127.0.0.1:1", "rest_address": f"http://{backend}"}
    cfg["rest"] = {"address": f"127.0.0.1:{rest_port}", "plaintext": True,
                   "parse": {"threads": threads}}
    return cfg


def load(url: str, body: bytes, token: str, stop: Any, pause_s: float,
         out: multiprocessing.Queue) -> None:
    done, spent = 0, 0.0
    with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {token}"}) as c:
        while not stop.is_set():
            t = time.perf_counter()
            c.post(url, content=body).raise_for_status()
            spent += time.perf_counter() - t
            done += 1
            stop.wait(pause_s)
    out.put((done, spent))


def probe(url: str, token: str, n: int) -> list[float]:
    times = []
    with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {token}"}) as c:
        for _ in range(50):
            c.post(url, content=SMALL).raise_for_status()
        for _ in range(n):
            t = time.perf_counter()
            c.post(url, content=SMALL).raise_for_status()
            times.append((time.perf_counter() - t) * 1e3)
    return times


def summary(times: list[float]) -> str:
    q = statistics.quantiles(times, n=100)
    return f"p50 {q[49]:7.2f} ms  p99 {q[98]:7.2f} ms  max {max(times):7.2f} ms"


def run_variant(env: benv.Env, backend: Service, threads: int, args: argparse.Namespace,
                body: bytes, cpu: int | None) -> None:
    port = benv.free_port()
    cfg = tfgate_config(env, backend.address, port, threads)
    name = f"tfgate-parse-{threads}"
    proxy = Service(name, ["-m", "proxy.cli", "serve", "--config",
                           str(benv.write_config(env, cfg, name))], env.dir, cpu=cpu)
    url = f"http://127.0.0.1:{port}{PATH}"
    try:
        alone = probe(url, env.token, args.probes)
        results: multiprocessing.Queue = multiprocessing.Queue()
        stop = multiprocessing.Event()
        loaders = [multiprocessing.Process(target=load, args=(
            url, body, env.token, stop, args.pause_s, results)) for _ in range(args.loaders)]
        for p in loaders:
            p.start()
        time.sleep(1.0)
        t0 = time.monotonic()
        loaded = probe(url, env.token, args.probes)
        wall = time.monotonic() - t0
        stop.set()
        big = [results.get(timeout=300) for _ in loaders]
        for p in loaders:
            p.join(30)
        label = "on the event loop" if threads == 0 else f"{threads} parse threads"
        print(f"parse {label}:")
        print(f"  probe alone          {summary(alone)}")
        print(f"  probe with big calls {summary(loaded)}  ({wall:.1f} s)")
        if big:
            calls, spent = sum(b[0] for b in big), sum(b[1] for b in big)
            print(f"  big calls ({len(body) / 2**20:.1f} MiB): {calls} done, "
                  f"mean {spent / max(calls, 1) * 1e3:.0f} ms")
    finally:
        proxy.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=300)
    parser.add_argument("--big-mib", type=float, default=4)
    parser.add_argument("--loaders", type=int, default=1)
    parser.add_argument("--pause-s", type=float, default=0.5,
                        help="each loader's pause between big calls (0: back to back)")
    parser.add_argument("--layout", choices=("pinned", "shared"), default="pinned")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    pinned = args.layout == "pinned" and len(cpus) > 1
    if pinned:
        os.sched_setaffinity(0, {cpus[0]})
    env = benv.make_env(pathlib.Path(tempfile.mkdtemp(prefix="tfgate-bench-parse-")))
    body = big_body(args.big_mib)
    backend = Service("rest-backend", ["-m", "bench.rest_backend"], env.dir,
                      cpu=cpus[0] if pinned else None)
    try:
        for threads in (0, 2):
            run_variant(env, backend, threads, args, body, cpus[1] if pinned else None)
    finally:
        backend.stop()


if __name__ == "__main__":
    main()
