"""tfgate's own CPU per small Predict, against the grpc.aio bare forwarder, in one run.

    python -m bench.percall [--rounds 3] [--seconds 5] [--against PATH] [--profile DIR]

The small-Predict saturation of `python -m bench` alone (h2load, 8 connections × 8
streams, TLS + JWT through tfgate with the bench's full config), repeated: each round
measures `bare_aio` (bench/bare.py --tls --aio: the same data plane, no checks) and then
tfgate, so the ratio is read within a round on a box whose load moves. `--against PATH`
adds a tfgate from another checkout (say main's) to every round, for before/after in
one run; every other round runs in reverse order. `--profile DIR` then runs one more
saturation under `py-spy record` (it must be installed: `pip install py-spy`; not a
dependency of the project) and writes the profile (speedscope JSON) and a table of the
event loop thread's functions with the most self time.

Layout as `python -m bench --layout pinned`: the measured process alone on the second
CPU, backend and h2load on the first. Every response is checked by its bytes (h2load's
DATA count), so a refused call fails the run rather than flatter it.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench import env as benv
from bench.loadgen import PREDICT, H2Load, have_h2load
from bench.procs import CpuMeter, Service

SAT = (8, 8)  # h2load -c 8 -m 8: 64 calls in flight, as bench.run's small_predict


def log(msg: str) -> None:
    print(f"percall: {msg}", file=sys.stderr, flush=True)


def _gen(env: benv.Env, address: str) -> H2Load:
    body = env.body_file("percall", env.small)
    return H2Load(f"https://{address}{PREDICT}", body, len(env.response),
                  [f"authorization: Bearer {env.token}"], env.dir)


def _saturate(env: benv.Env, svc: Service, seconds: float) -> float:
    """CPU µs per call of `svc` over `seconds` of saturation (after a warm-up)."""
    gen = _gen(env, svc.address)
    warm = gen.run(n=500, clients=SAT[0], streams=SAT[1])
    meter = CpuMeter(svc).start()
    run = gen.run(duration_s=seconds, clients=SAT[0], streams=SAT[1])
    cpu = meter.stop()[0]
    errors = warm.errors + run.errors
    if errors or not run.calls:
        raise RuntimeError(f"{svc.name}: {errors[:3] or 'no calls'}")
    return cpu / run.calls * 1e6


def _tfgate(env: benv.Env, backend: Service, cpu: int | None, name: str,
            repo: pathlib.Path | None, stages: pathlib.Path | None = None) -> Service:
    """`stages`: serve through bench/stagecpu.py (this checkout's, whatever `repo`),
    which writes the stages' thread CPU there when the process exits."""
    cfg = benv.proxy_config(env, backend.address, benv.free_port(), mtls=False)
    entry = ["-m", "proxy.cli"] if stages is None else [
        str(pathlib.Path(__file__).with_name("stagecpu.py")), str(stages)]
    argv = [*entry, "serve", "--config", str(benv.write_config(env, cfg, name))]
    return Service(name, argv, env.dir, cpu=cpu, repo=repo)


def _stages(env: benv.Env, backend: Service, cpu: int | None, seconds: float,
            repos: dict[str, pathlib.Path | None]) -> dict[str, str]:
    """Each checkout's table of stage CPU under one saturation run."""
    tables = {}
    for name, repo in repos.items():
        out = env.dir / f"stages-{name}.txt"
        svc = _tfgate(env, backend, cpu, f"tfgate-stages-{name}", repo, out)
        try:
            _saturate(env, svc, seconds)
        finally:
            svc.stop()
        tables[name] = out.read_text() if out.exists() else "(no table written)\n"
    return tables


def _self_time(profile: pathlib.Path, top: int,
               thread: str = "tfgate-loop") -> list[tuple[float, float, str]]:
    """The functions with the most self time in a speedscope profile from py-spy, with
    their inclusive time, as percentages of the samples of the event loop's thread (where
    every call runs). Lines of one function count as one."""
    data = json.loads(profile.read_text())
    frames = data["shared"]["frames"]
    names = [f"{f['name']} ({_short(f.get('file', ''))})" for f in frames]
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0.0
    for prof in data["profiles"]:
        if thread not in prof["name"]:
            continue
        for stack, weight in zip(prof["samples"], prof["weights"], strict=True):
            total += weight
            if stack:
                own[names[stack[-1]]] += weight
                for name in {names[i] for i in stack}:
                    inclusive[name] += weight
    if not total:
        return []
    return [(100.0 * n / total, 100.0 * inclusive[name] / total, name)
            for name, n in own.most_common(top)]


def _short(path: str) -> str:
    for marker in ("/site-packages/", "/proxy/", "/lib/python3"):
        if marker in path:
            return path[path.index(marker) + 1:]
    return path


def _profile(env: benv.Env, svc: Service, seconds: float, out: pathlib.Path,
             top: int, native: bool) -> list[tuple[float, float, str]]:
    spy = shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("py-spy not found (pip install py-spy)")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "tfgate.speedscope.json"
    gen = _gen(env, svc.address)
    gen.run(n=500, clients=SAT[0], streams=SAT[1])
    spy_proc = subprocess.Popen(
        [spy, "record", "--pid", str(svc.popen.pid), "--duration", f"{seconds + 1:g}",
         "--rate", "250", *(["--native"] if native else []), "--format", "speedscope",
         "--output", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # py-spy attaches
    gen.run(duration_s=seconds, clients=SAT[0], streams=SAT[1])
    _, err = spy_proc.communicate(timeout=seconds + 60)
    if spy_proc.returncode != 0 or not path.exists():
        raise RuntimeError(f"py-spy failed: {err[-400:]}")
    table = _self_time(path, top)
    (out / "self_time.txt").write_text("".join(
        f"{pct:5.1f} %  {incl:5.1f} %  {name}\n" for pct, incl, name in table))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.percall", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="saturation per measurement")
    parser.add_argument("--against", type=pathlib.Path,
                        help="another checkout whose tfgate is measured in every round too")
    parser.add_argument("--profile", type=pathlib.Path,
                        help="then profile this checkout's tfgate with py-spy into this directory")
    parser.add_argument("--stages", action="store_true",
                        help="then one saturation per checkout through bench/stagecpu.py: "
                             "thread CPU per synchronous stage of a call")
    parser.add_argument("--native", action="store_true",
                        help="py-spy --native: C frames too (grpc core, upb), much slower sampling")
    parser.add_argument("--top", type=int, default=40, help="rows of the self-time table")
    parser.add_argument("--out", type=pathlib.Path, help="working directory (default: a temp dir)")
    args = parser.parse_args(argv)
    if not have_h2load():
        log("h2load not found (apt-get install nghttp2-client)")
        return 2
    cpus = sorted(os.sched_getaffinity(0))
    load_cpu, proxy_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    if load_cpu is not None:
        os.sched_setaffinity(0, {load_cpu})
    out = (args.out or pathlib.Path(tempfile.mkdtemp(prefix="tfgate-percall-"))).resolve()
    env = benv.make_env(out)
    backend = Service("backend", ["-m", "bench.backend"], out, cpu=load_cpu)
    tls = ["--tls", str(env.server_cert), str(env.server_key), "--aio"]
    names = ["bare_aio", "tfgate"] + (["against"] if args.against else [])
    results: dict[str, list[float]] = {name: [] for name in names}
    try:
        for r in range(args.rounds):
            # Every other round in reverse order: whatever runs later in a round (a warmer
            # backend, a busier box) favours neither side of a ratio.
            for name in (names if r % 2 == 0 else names[::-1]):
                if name == "bare_aio":
                    svc = Service("bare_aio", ["-m", "bench.bare", "--upstream", backend.address,
                                               *tls], out, cpu=proxy_cpu)
                else:
                    svc = _tfgate(env, backend, proxy_cpu, f"tfgate-{name}",
                                  args.against.resolve() if name == "against" else None)
                try:
                    results[name].append(_saturate(env, svc, args.seconds))
                finally:
                    svc.stop()
            row = "  ".join(f"{n} {results[n][-1]:,.0f}" for n in names)
            ratio = results["tfgate"][-1] / results["bare_aio"][-1]
            log(f"round {r + 1}: CPU µs/call {row}; tfgate/bare_aio ×{ratio:.2f}")
        tables = {}
        if args.stages:
            repos = {"tfgate": None, **({"against": args.against.resolve()} if args.against else {})}
            tables = _stages(env, backend, proxy_cpu, args.seconds, repos)
        table = None
        if args.profile:
            svc = _tfgate(env, backend, proxy_cpu, "tfgate-profiled", None)
            try:
                table = _profile(env, svc, args.seconds * 2, args.profile, args.top, args.native)
            finally:
                svc.stop()
    finally:
        backend.stop()
    _report(results, table)
    for name, text in tables.items():
        print(f"\nthread CPU per stage, {name} (bench/stagecpu.py):\n{text}", end="")
    return 0


def _report(results: dict[str, list[float]],
            table: list[tuple[float, float, str]] | None) -> None:
    if not results["tfgate"]:
        ratios = [0.0]
    else:
        ratios = [t / b for t, b in zip(results["tfgate"], results["bare_aio"], strict=True)]
    for name, values in results.items():
        if not values:
            continue
        print(f"{name:9s} CPU µs/call: {min(values):,.0f}–{max(values):,.0f} "
              f"(median {statistics.median(values):,.0f}) over {len(values)} rounds")
    if results["tfgate"]:
        print(f"tfgate / bare_aio within a round: ×{min(ratios):.2f}–×{max(ratios):.2f}")
    if results.get("against"):
        base = [a / b for a, b in zip(results["against"], results["bare_aio"], strict=True)]
        print(f"against / bare_aio within a round: ×{min(base):.2f}–×{max(base):.2f}")
        rel = [t / a for t, a in zip(results["tfgate"], results["against"], strict=True)]
        print(f"tfgate / against within a round: ×{min(rel):.2f}–×{max(rel):.2f}")
    if table:
        print("\npy-spy, % of the event loop thread's samples: self, inclusive, function")
        for pct, incl, name in table:
            print(f"{pct:5.1f} %  {incl:5.1f} %  {name}")


if __name__ == "__main__":
    sys.exit(main())
