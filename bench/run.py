"""tfgate benchmark: direct access vs access through tfgate, in one run.

    python -m bench [--quick] [--layout pinned|shared] [--json PATH] [--markdown PATH]

See bench/README.md. Exit status: 0 when every call got the expected response, 1 when
a scenario failed functionally (wrong or refused responses), 2 when the bench could not
run (a process did not start). Timings never change the exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pathlib
import platform
import resource
import ssl
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bench import env as benv
from bench.loadgen import PREDICT, H2Load, PyBidi, PyRest, PyUnary, Run, have_h2load
from bench.procs import CpuMeter, Service

CREATE_CONTEXT = "/tensorflow.eager.EagerService/CreateContext"


@dataclass(frozen=True)
class Plan:
    small_c1: int
    small_sat_s: float
    large_c1: int
    large_sat_s: float
    bidi_pp: int
    bidi_sat_s: float
    mtls_c1: int
    mtls_sat_s: float
    soak_chunks: int
    soak_calls: int
    huge_calls: int
    rest_c1: int
    rest_sat_s: float


QUICK = Plan(1000, 3, 100, 3, 1000, 3, 300, 2, 5, 2000, 2, 500, 2)
FULL = Plan(4000, 8, 300, 8, 4000, 8, 2000, 5, 10, 5000, 3, 3000, 6)
SMALL_SAT = (8, 8)     # h2load -c 8 -m 8: 64 calls in flight
REST_SAT = (16, 1)     # 16 HTTP/1.1 connections, one call each in flight
REST_PATH = "/v1/models/bench:predict"
LARGE_SAT = (4, 2)     # 8 calls of 1 MiB in flight
BIDI_SAT = (4, 16)     # 4 streams x 16 messages in flight


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace, env: benv.Env, plan: Plan,
                 cpus: tuple[int | None, int | None]) -> None:
        self.args = args
        self.env = env
        self.plan = plan
        self.load_cpu, self.proxy_cpu = cpus
        self.use_h2load = args.loadgen == "h2load" or (args.loadgen == "auto" and have_h2load())
        self.errors: list[str] = []
        self.scenarios: dict[str, dict[str, Any]] = {
            "small_predict": {}, "predict_1mib": {}, "bidi_stream": {}, "rest_predict": {}}
        self.extras: dict[str, Any] = {}

    # -- helpers -------------------------------------------------------------------

    def _check(self, where: str, run: Run) -> Run:
        for e in run.errors:
            self.errors.append(f"{where}: {e}")
            log(f"FAILED {where}: {e}")
        if run.calls == 0 and not run.errors:
            self.errors.append(f"{where}: no calls completed")
        return run

    def _tls_channel(self, address: str, *, client_cert: bool = True):
        import grpc
        creds = grpc.ssl_channel_credentials(
            root_certificates=self.env.ca.read_bytes(),
            private_key=self.env.client_key.read_bytes() if client_cert else None,
            certificate_chain=self.env.client_cert.read_bytes() if client_cert else None)
        return grpc.secure_channel(address, creds, options=[
            ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])

    def _insecure_channel(self, address: str):
        import grpc
        return grpc.insecure_channel(address, options=[
            ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])

    def _unary_gen(self, address: str, through_proxy: bool, request: bytes, name: str):
        """The unary load generator; through tfgate it uses the TLS + JWT listener."""
        if self.use_h2load:
            body = self.env.body_file(name, request)
            if through_proxy:
                return H2Load(f"https://{address}{PREDICT}", body, len(self.env.response),
                              [f"authorization: Bearer {self.env.token}"], self.env.dir), "h2load"
            return H2Load(f"http://{address}{PREDICT}", body, len(self.env.response), [],
                          self.env.dir), "h2load"
        if through_proxy:
            return PyUnary(self._tls_channel(address, client_cert=False), PREDICT, request,
                           self.env.response, self.env.bearer), "python"
        return PyUnary(self._insecure_channel(address), PREDICT, request,
                       self.env.response), "python"

    # -- scenarios -----------------------------------------------------------------

    def _metered(self, services: list[Service], fn):
        """Run `fn()`, returning (result, CPU seconds of each service, foreign CPU %):
        the share of the box used by processes other than ours while it ran."""
        meter = CpuMeter(*services).start()
        box0, kids0, me0 = _box_busy_s(), _children_cpu_s(), _self_cpu_s()
        t0 = time.monotonic()
        result = fn()
        wall = time.monotonic() - t0
        cpu = meter.stop()
        ours = sum(cpu) + (_children_cpu_s() - kids0) + (_self_cpu_s() - me0)
        foreign = max(0.0, (_box_busy_s() - box0) - ours)
        return result, cpu, round(100 * foreign / (wall * (os.cpu_count() or 1)), 1)

    def _rest_gen(self, address: str, side: str):
        """REST predicts: plaintext to the REST backend, TLS + JWT through tfgate (native:
        the backend's answer passes through; translated: tfgate writes the JSON)."""
        from bench.messages import predict_response, rest_predict_body
        from bench.rest_backend import ANSWER
        from proxy.rest import translate_out

        body = rest_predict_body()
        expected = (translate_out.predict_json(predict_response(), True)
                    if side == "translate" else ANSWER)
        through = side != "direct"
        auth = [("authorization", f"Bearer {self.env.token}")] if through else []
        if self.use_h2load:
            url = f"{'https' if through else 'http'}://{address}{REST_PATH}"
            return H2Load(url, self.env.body_file_raw("rest_predict", body), len(expected),
                          [f"{k}: {v}" for k, v in auth], self.env.dir, h1=True), "h2load"
        tls = ssl.create_default_context(cafile=str(self.env.ca)) if through else None
        return PyRest(address, REST_PATH, body, expected, auth, tls), "python"

    def unary(self, key: str, side: str, address: str, measured: Service, others: list[Service],
              request: bytes, c1: int, sat_s: float, sat: tuple[int, int],
              gen_tool: tuple[Any, str] | None = None) -> None:
        through = side != "direct"
        gen, tool = gen_tool or self._unary_gen(address, side.startswith(("proxy", "bare_")),
                                                    request, key)
        where = f"{key}/{side}"
        self._check(where + " warm-up", gen.run(n=max(20, c1 // 4), clients=sat[0],
                                                  streams=sat[1]))
        measured.reset_peak()
        services = [measured, *others]
        unloaded, cpu_c1, busy_c1 = self._metered(services, lambda: gen.run(n=c1, latencies=True))
        self._check(where + " unloaded", unloaded)
        loaded, cpu_sat, busy_sat = self._metered(
            services, lambda: gen.run(duration_s=sat_s, clients=sat[0], streams=sat[1]))
        self._check(where + " saturation", loaded)
        hop = {"direct": "plaintext h2c", "bare": "plaintext h2c, no checks",
               "bare_tls": "TLS, no checks (sync)", "bare_aio": "TLS, no checks (grpc.aio)",
               "proxy": "TLS + JWT", "translate": "TLS + JWT, to gRPC"}[side]
        if key == "rest_predict":
            hop = {"direct": "plaintext HTTP/1.1", "proxy": "TLS + JWT, HTTP/1.1 native",
                   "translate": "TLS + JWT, HTTP/1.1 -> gRPC"}[side]
        self.scenarios[key][side] = self._result(
            tool, unloaded, loaded, cpu_c1, cpu_sat, measured, through, hop=hop,
            load=f"unloaded: 1 call at a time x {c1}; saturation: {sat[0]} connections x "
                 f"{sat[1]} streams for {sat_s:g} s",
            foreign=max(busy_c1, busy_sat))

    def bidi(self, side: str, address: str, measured: Service, others: list[Service]) -> None:
        """StreamingEnqueue: through tfgate's cluster family (mTLS, the context created
        first, every message an EnqueueRequest inspected and judged), or direct."""
        through = side == "proxy"
        channel = self._tls_channel(address) if through else self._insecure_channel(address)
        from bench.backend import STREAM_REPLY
        from bench.messages import create_context
        where = f"bidi_stream/{side}"
        try:
            channel.unary_unary(CREATE_CONTEXT)(create_context(), timeout=10)
        except Exception as err:  # noqa: BLE001 - reported as a functional failure
            self.errors.append(f"{where}: CreateContext failed: {err}")
        gen = PyBidi(channel, self.env.stream_message, STREAM_REPLY)
        self._check(where + " warm-up", gen.ping_pong(200))
        measured.reset_peak()
        services = [measured, *others]
        unloaded, cpu_c1, busy_c1 = self._metered(
            services, lambda: gen.ping_pong(self.plan.bidi_pp))
        self._check(where + " ping-pong", unloaded)
        loaded, cpu_sat, busy_sat = self._metered(
            services, lambda: gen.pipelined(*BIDI_SAT, duration_s=self.plan.bidi_sat_s))
        self._check(where + " pipelined", loaded)
        self.scenarios["bidi_stream"][side] = self._result(
            "python", unloaded, loaded, cpu_c1, cpu_sat, measured, through,
            hop="mTLS, cluster guard" if through else "plaintext h2c",
            load=f"unloaded: 1 stream ping-pong x {self.plan.bidi_pp} messages; saturation: "
                 f"{BIDI_SAT[0]} streams x {BIDI_SAT[1]} messages in flight for "
                 f"{self.plan.bidi_sat_s:g} s (rps = messages/s; per call = per message)",
            foreign=max(busy_c1, busy_sat))
        channel.close()

    def _result(self, tool: str, unloaded: Run, loaded: Run, cpu_c1: list[float],
                cpu_sat: list[float], measured: Service, through: bool, hop: str,
                load: str, foreign: float) -> dict[str, Any]:
        def per_call(cpu: float, run: Run) -> float | None:
            return round(cpu / run.calls * 1e6, 1) if run.calls else None

        out: dict[str, Any] = {
            "p50_ms": _r(unloaded.percentile_ms(0.50)),
            "p99_ms": _r(unloaded.percentile_ms(0.99)),
            "rps": round(loaded.rps, 1),
            "cpu_us_per_call": per_call(cpu_sat[0], loaded),
            "cpu_us_per_call_unloaded": per_call(cpu_c1[0], unloaded),
            "calls": unloaded.calls + loaded.calls,
            "loadgen": tool, "hop": hop, "load": load,
            "foreign_cpu_pct": foreign,
        }
        if foreign > 5:
            log(f"warning: other processes used {foreign} % of the box during a run; "
                "its timings are disturbed")
        if through and len(cpu_sat) > 1:
            out["backend_cpu_us_per_call"] = per_call(cpu_sat[1], loaded)
        if through:
            out["peak_rss_mb"] = round(measured.peak_rss_mb(), 1)
            out["backend_cpu_us_per_call"] = per_call(cpu_sat[1], loaded)
        return out

    def rest(self, side: str, address: str, measured: Service, others: list[Service]) -> None:
        self.unary("rest_predict", side, address, measured, others, b"", self.plan.rest_c1,
                   self.plan.rest_sat_s, REST_SAT, self._rest_gen(address, side))

    def rest_sanity(self, address: str) -> None:
        """The REST front refuses a call without a token and a model no rule grants."""
        import httpx

        from bench.messages import rest_predict_body
        tls = ssl.create_default_context(cafile=str(self.env.ca))
        auth = {"authorization": f"Bearer {self.env.token}"}
        with httpx.Client(verify=tls, timeout=10, base_url=f"https://{address}") as c:
            for name, path, headers, status in (
                    ("no token", REST_PATH, {}, 401),
                    ("other model", "/v1/models/not-granted:predict", auth, 403),
                    ("allowed", REST_PATH, auth, 200)):
                got = c.post(path, content=rest_predict_body(), headers=headers).status_code
                if got != status:
                    self.errors.append(f"REST sanity '{name}': expected {status}, got {got}")

    def mtls_small(self, side: str, address: str, measured: Service) -> None:
        """The mTLS hop with a Python client (h2load cannot present a certificate)."""
        through = side == "proxy"
        channel = self._tls_channel(address) if through else self._insecure_channel(address)
        gen = PyUnary(channel, PREDICT, self.env.small, self.env.response,
                      self.env.bearer if through else ())
        where = f"mtls_small_predict/{side}"
        self._check(where + " warm-up", gen.run(n=100))
        meter = CpuMeter(measured).start()
        unloaded = self._check(where + " unloaded", gen.run(n=self.plan.mtls_c1))
        cpu_c1 = meter.stop()
        meter.start()
        loaded = self._check(where + " 16 in flight",
                             gen.run(duration_s=self.plan.mtls_sat_s, clients=1, streams=16))
        cpu_sat = meter.stop()
        self.extras.setdefault("mtls_small_predict", {})[side] = {
            "p50_ms": _r(unloaded.percentile_ms(0.5)), "p99_ms": _r(unloaded.percentile_ms(0.99)),
            "rps": round(loaded.rps, 1),
            "cpu_us_per_call": round(cpu_sat[0] / loaded.calls * 1e6, 1) if loaded.calls else None,
            "cpu_us_per_call_unloaded": (round(cpu_c1[0] / unloaded.calls * 1e6, 1)
                                         if unloaded.calls else None),
            "hop": "mTLS + JWT" if through else "plaintext h2c", "loadgen": "python",
            "note": "the Python client is the bottleneck at 16 in flight",
        }
        channel.close()

    def soak(self, proxy: Service) -> None:
        """Bounded soak: proxy RSS after each chunk of small calls."""
        gen, tool = self._unary_gen(proxy.address, True, self.env.small, "soak")
        rss = []
        for i in range(self.plan.soak_chunks):
            self._check(f"soak chunk {i}", gen.run(n=self.plan.soak_calls, clients=4, streams=4))
            rss.append(round(proxy.rss_mb(), 2))
        steady = rss[1:] if len(rss) > 2 else rss
        growth = steady[-1] - steady[0]
        calls = self.plan.soak_calls * (len(steady) - 1)
        self.extras["soak"] = {
            "calls": self.plan.soak_calls * self.plan.soak_chunks, "loadgen": tool,
            "rss_mb_after_each_chunk": rss, "growth_mb_after_first_chunk": round(growth, 2),
            "growth_bytes_per_call": round(growth * 2**20 / calls, 1) if calls else None,
        }

    def under_attack(self, proxy: Service) -> None:
        """Honest small Predicts through tfgate (TLS + JWT listener, which anyone can
        reach) for a few seconds alone, then again beside attackers without credentials
        (half-open streams, HEADERS+RST_STREAM floods) and one with a valid token (slow
        bodies): throughput and p99 as ratios, and the proxy's peak RSS."""
        from tests import h2attack

        gen, tool = self._unary_gen(proxy.address, True, self.env.small, "attack")
        seconds = self.plan.small_sat_s
        honest = dict(duration_s=seconds, clients=2, streams=4, latencies=True)
        proxy.reset_peak()
        cpu, wall = proxy.cpu_s(), time.monotonic()
        calm = self._check("under_attack/calm", gen.run(**honest))
        calm_busy = (proxy.cpu_s() - cpu) / (time.monotonic() - wall)
        calm_rss = proxy.peak_rss_mb()
        target = h2attack.Target("127.0.0.1", int(proxy.address.rsplit(":", 1)[1]),
                                 ca=self.env.ca.read_bytes(), server_name="localhost")
        token = f"Bearer {self.env.token}"
        proxy.reset_peak()
        with h2attack.half_open(target, 256, reopen_per_s=500, duration=seconds + 5) as a1, \
                h2attack.rapid_reset(target, connections=3, rate=1000, duration=seconds + 5) as a2, \
                h2attack.slow_body(target, 64, authorization=token, chunk=1, interval=0.2,
                                   reopen_per_s=200, duration=seconds + 5) as a3:
            time.sleep(0.5)  # let the attack build up
            opened = a1.stats["streams_opened"] + a2.stats["streams_opened"]
            cpu, wall = proxy.cpu_s(), time.monotonic()
            attacked = self._check("under_attack/attacked", gen.run(**honest))
            elapsed = time.monotonic() - wall
            attacked_busy = (proxy.cpu_s() - cpu) / elapsed
            streams_per_s = (a1.stats["streams_opened"] + a2.stats["streams_opened"]
                             - opened) / elapsed
        attacks = {name: run.stats.snapshot()["counts"] for name, run in
                   (("half_open", a1), ("rapid_reset", a2), ("slow_body_with_token", a3))}
        self.extras["under_attack"] = {
            "loadgen": tool, "honest": "small Predict, 2 connections x 4 streams, TLS + JWT",
            "attack": "256 half-open streams (no credentials, reopened at 500/s), HEADERS+"
                      "RST_STREAM at 1000/s over 3 connections (no credentials), 64 slow "
                      "bodies with a valid token (1 byte / 0.2 s, reopened at 200/s)",
            "calm": {"rps": round(calm.rps, 1), "p99_ms": _r(calm.percentile_ms(0.99)),
                     "errors": len(calm.errors)},
            "attacked": {"rps": round(attacked.rps, 1),
                         "p99_ms": _r(attacked.percentile_ms(0.99)),
                         "errors": len(attacked.errors)},
            "rps_ratio": round(attacked.rps / calm.rps, 2) if calm.rps else None,
            "p99_ratio": (round(attacked.percentile_ms(0.99) / calm.percentile_ms(0.99), 2)
                          if calm.percentile_ms(0.99) and attacked.percentile_ms(0.99) else None),
            "peak_rss_mb": {"calm": round(calm_rss, 1), "attacked": round(proxy.peak_rss_mb(), 1)},
            "attack_counts": attacks,
            # The proxy's CPU (cores busy) in each phase, and the credential-less streams
            # the attackers opened per second while the honest load ran.
            "proxy_cores_busy": {"calm": round(calm_busy, 2), "attacked": round(attacked_busy, 2)},
            "attack_streams_per_s": round(streams_per_s),
        }

    def huge(self, svc: Service, side: str) -> None:
        """Peak memory for 16 MiB requests: RSS high-water mark during each call minus
        the RSS just before it. The first calls into a fresh process show the most (the
        allocator has not kept any large block yet); the last shows steady state."""
        if side == "proxy":
            channel = self._tls_channel(svc.address)
            gen16 = PyUnary(channel, PREDICT, self.env.huge, self.env.response, self.env.bearer)
        else:
            channel = self._insecure_channel(svc.address)
            gen16 = PyUnary(channel, PREDICT, self.env.huge, self.env.response)
        peaks = []
        for i in range(self.plan.huge_calls):
            svc.reset_peak()
            before = svc.rss_mb()
            self._check(f"16 MiB request {i} ({side})", gen16.run(n=1))
            peaks.append(round(svc.peak_rss_mb() - before, 1))
        channel.close()
        size_mb = len(self.env.huge) / 2**20
        self.extras.setdefault("request_16mib", {"request_mb": round(size_mb, 2)})[side] = {
            "peak_extra_rss_mb": peaks,
            "ratio_to_request_size": round(max(peaks) / size_mb, 2) if peaks else None,
            "ratio_last_call": round(peaks[-1] / size_mb, 2) if peaks else None,
            "hop": "mTLS + JWT" if side == "proxy" else "plaintext h2c, no checks",
        }

    def sanity(self, proxy: Service, *, client_cert: bool) -> None:
        """The pipeline is on: refusals happen, and allowed calls carry the right bytes."""
        import grpc
        channel = self._tls_channel(proxy.address, client_cert=client_cert)
        call = channel.unary_unary(PREDICT)
        # every rule requires a token, so a call without one is unauthenticated, with or
        # without a certificate (token-required / no-credentials)
        expectations = [
            ("no token", self.env.small, (), grpc.StatusCode.UNAUTHENTICATED),
            ("other model", _other_model(self.env.small), self.env.bearer,
             grpc.StatusCode.PERMISSION_DENIED),
            ("allowed", self.env.small, self.env.bearer, grpc.StatusCode.OK),
        ]
        for name, request, md, code in expectations:
            try:
                response = call(request, metadata=md, timeout=10)
                got = grpc.StatusCode.OK if response == self.env.response else None
            except grpc.RpcError as err:
                got = err.code()
            if got is not code:
                self.errors.append(f"sanity '{name}': expected {code.name}, got {got}")
        channel.close()


def _box_busy_s() -> float:
    """CPU seconds the whole box has spent busy since boot (/proc/stat)."""
    fields = pathlib.Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(x) for x in fields]
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)  # h2load, once waited for
    return r.ru_utime + r.ru_stime


def _self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)  # the Python load generator
    return r.ru_utime + r.ru_stime


def _other_model(request: bytes) -> bytes:
    from proxy.pb import serving_pb2
    msg = serving_pb2.PredictRequest.FromString(request)
    msg.model_spec.name = "not-granted"
    return msg.SerializeToString()


def _r(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


# -- orchestration ---------------------------------------------------------------------

def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if args.quick else FULL
    cpus = sorted(os.sched_getaffinity(0))
    layout = args.layout
    if layout == "pinned" and len(cpus) < 2:
        log("--layout pinned needs 2 CPUs; using shared")
        layout = "shared"
    load_cpu, proxy_cpu = (cpus[0], cpus[1]) if layout == "pinned" else (None, None)
    if load_cpu is not None:
        os.sched_setaffinity(0, {load_cpu})  # this process is a load generator too
    out = (args.out or pathlib.Path(tempfile.mkdtemp(prefix="tfgate-bench-"))).resolve()
    env = benv.make_env(out)
    bench = Bench(args, env, plan, (load_cpu, proxy_cpu))
    if not bench.use_h2load:
        log("h2load not found (apt-get install nghttp2-client): unary scenarios use the "
            "Python gRPC client instead, which is slower than the proxy it measures")
    started = time.monotonic()
    backend_argv = ["-m", "bench.backend"]

    def where(cpu: int | None) -> str:
        return "unpinned" if cpu is None else f"on CPU {cpu}"

    log(f"layout {layout}: direct phase (backend {where(proxy_cpu)})")
    backend = Service("backend-direct", backend_argv, out, cpu=proxy_cpu)
    try:
        bench.unary("small_predict", "direct", backend.address, backend, [], env.small,
                    plan.small_c1, plan.small_sat_s, SMALL_SAT)
        bench.unary("predict_1mib", "direct", backend.address, backend, [], env.large,
                    plan.large_c1, plan.large_sat_s, LARGE_SAT)
        bench.bidi("direct", backend.address, backend, [])
        bench.mtls_small("direct", backend.address, backend)
    finally:
        backend.stop()
    rest_backend = Service("rest-backend-direct", ["-m", "bench.rest_backend"], out, cpu=proxy_cpu)
    try:
        bench.rest("direct", rest_backend.address, rest_backend, [])
    finally:
        rest_backend.stop()

    log(f"proxy phase (bare forwarder, then tfgate {where(proxy_cpu)}; backend and load "
        f"generators {where(load_cpu)})")
    backend = Service("backend", backend_argv, out, cpu=load_cpu)
    rest_backend = Service("rest-backend", ["-m", "bench.rest_backend"], out, cpu=load_cpu)
    workers = None
    try:
        if not args.no_bare:
            tls = ["--tls", str(env.server_cert), str(env.server_key)]
            for side, extra in (("bare", []), ("bare_tls", tls), ("bare_aio", [*tls, "--aio"])):
                bare = Service(side, ["-m", "bench.bare", "--upstream", backend.address,
                                      "--threads", str(args.threads), *extra], out,
                               cpu=proxy_cpu)
                try:
                    bench.unary("small_predict", side, bare.address, bare, [backend],
                                env.small, plan.small_c1, plan.small_sat_s, SMALL_SAT)
                    bench.unary("predict_1mib", side, bare.address, bare, [backend],
                                env.large, plan.large_c1, plan.large_sat_s, LARGE_SAT)
                    if side == "bare" and not args.no_memory:
                        bench.huge(bare, "bare")
                finally:
                    bare.stop()
        rest_port = benv.free_port()
        with _proxy(args, env, backend, proxy_cpu, mtls=False, bench=bench,
                    rest=("native", rest_port, rest_backend.address)) as proxy:
            workers = len(proxy.tree()) - 1 or 1
            bench.sanity(proxy, client_cert=False)
            bench.unary("small_predict", "proxy", proxy.address, proxy, [backend], env.small,
                        plan.small_c1, plan.small_sat_s, SMALL_SAT)
            bench.unary("predict_1mib", "proxy", proxy.address, proxy, [backend], env.large,
                        plan.large_c1, plan.large_sat_s, LARGE_SAT)
            rest_address = f"127.0.0.1:{rest_port}"
            bench.rest_sanity(rest_address)
            bench.rest("proxy", rest_address, proxy, [rest_backend])
            if not args.no_memory:
                bench.soak(proxy)
            if not args.no_attack:
                bench.under_attack(proxy)
        rest_port = benv.free_port()
        with _proxy(args, env, backend, proxy_cpu, mtls=False, bench=bench,
                    rest=("translate", rest_port, rest_backend.address),
                    name="tfgate-rest-translate") as proxy:
            bench.rest("translate", f"127.0.0.1:{rest_port}", proxy, [backend])
        with _proxy(args, env, backend, proxy_cpu, mtls=True, bench=bench) as proxy:
            bench.sanity(proxy, client_cert=True)
            bench.mtls_small("proxy", proxy.address, proxy)
            if not args.no_memory:
                bench.huge(proxy, "proxy")
        with _proxy(args, env, backend, proxy_cpu, mtls=True, bench=bench,
                    cluster=True) as proxy:
            bench.bidi("proxy", proxy.address, proxy, [backend])
    finally:
        backend.stop()
        rest_backend.stop()
    audit_lines = sum(1 for _ in env.audit.open()) if env.audit.exists() else 0

    for sides in bench.scenarios.values():
        d, p = sides.get("direct"), sides.get("proxy")
        if d and p:
            sides["ratio"] = _ratios(d, p)
        for bare in ("bare", "bare_tls", "bare_aio"):
            if sides.get(bare) and p:
                sides[f"ratio_to_{bare}"] = _ratios(sides[bare], p)
        if d and sides.get("translate"):
            sides["ratio_translate"] = _ratios(d, sides["translate"])
    return {
        "tfgate_bench": 1,
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "layout": layout,
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "machine": _machine(),
        "proxy": {"workers": workers, "data_plane": "grpc.aio (uvloop)",
                  "pipeline": "TLS listener (mTLS for the Python-client scenarios), JWT ES256 "
                              "(cached), ACL on model and signature, identity forwarding, "
                              "audit to a file"},
        "scenarios": bench.scenarios,
        "extras": bench.extras,
        "audit_lines": audit_lines,
        "errors": bench.errors,
        "ok": not bench.errors,
        "seconds": round(time.monotonic() - started, 1),
        "out_dir": str(out),
    }


@contextlib.contextmanager
def _proxy(args: argparse.Namespace, env: benv.Env, backend: Service, cpu: int | None, *,
           mtls: bool, bench: Bench, rest: tuple[str, int, str] | None = None,
           name: str | None = None, cluster: bool = False) -> Iterator[Service]:
    """`cluster`: the StreamingEnqueue tfgate, one process (a cluster upstream's handle
    ownership lives in one process: `--workers` does not apply)."""
    name = name or ("tfgate-cluster" if cluster else "tfgate-mtls" if mtls else "tfgate-tls")
    cfg = (benv.cluster_config(env, backend.address, benv.free_port()) if cluster else
           benv.proxy_config(env, backend.address, benv.free_port(), mtls=mtls, rest=rest))
    argv = ["-m", "proxy.cli", "serve", "--config", str(benv.write_config(env, cfg, name))]
    if args.workers and not cluster:
        argv += ["--workers", str(args.workers)]
    proxy = Service(name, argv, env.dir, cpu=cpu)
    try:
        yield proxy
        if not proxy.alive():
            bench.errors.append(f"{name} exited early: {proxy.log_tail()}")
    finally:
        proxy.stop()


def _ratios(d: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    def div(a: Any, b: Any) -> float | None:
        return round(a / b, 2) if a and b else None

    def sub(a: Any, b: Any) -> float | None:
        return round(a - b, 3) if a is not None and b is not None else None

    return {"p50": div(p["p50_ms"], d["p50_ms"]), "p99": div(p["p99_ms"], d["p99_ms"]),
            "rps": div(p["rps"], d["rps"]),
            "added_p50_ms": sub(p["p50_ms"], d["p50_ms"]),
            "added_p99_ms": sub(p["p99_ms"], d["p99_ms"]),
            "cpu": div(p["cpu_us_per_call"], d["cpu_us_per_call"])}


def _machine() -> dict[str, Any]:
    model = ""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import grpc
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "grpcio": grpc.__version__, "kernel": platform.release()}


# -- report ----------------------------------------------------------------------------

def markdown(result: dict[str, Any]) -> str:
    lines = [f"tfgate bench ({result['mode']}, layout {result['layout']}, "
             f"{result['proxy']['workers']} worker(s), {result['seconds']} s)", "",
             "| scenario | path | hop | load gen | p50 ms | p99 ms | rps | CPU µs/call (sat) "
             "| CPU µs/call (unloaded) | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key, sides in result["scenarios"].items():
        for side in ("direct", "bare", "bare_tls", "bare_aio", "proxy", "translate"):
            s = sides.get(side)
            if not s:
                continue
            who = {"direct": "backend", "proxy": "tfgate", "translate": "tfgate"}.get(
                side, "bare fwd")
            lines.append(f"| {key} | {side} | {s['hop']} | {s['loadgen']} | {_f(s['p50_ms'])} "
                         f"| {_f(s['p99_ms'])} | {_f(s['rps'], 0)} | {who} {_f(s['cpu_us_per_call'], 0)} "
                         f"| {_f(s['cpu_us_per_call_unloaded'], 0)} | {_f(s.get('peak_rss_mb'), 1)} |")
        for rkey, label in (("ratio", "proxy/direct"), ("ratio_to_bare", "proxy/bare"),
                            ("ratio_to_bare_tls", "proxy/bare_tls"),
                            ("ratio_to_bare_aio", "proxy/bare_aio"),
                            ("ratio_translate", "translate/direct")):
            r = sides.get(rkey)
            if r:
                lines.append(f"| {key} | {label} | | | ×{_f(r['p50'], 2)} "
                             f"(+{_f(r['added_p50_ms'])}) | ×{_f(r['p99'], 2)} "
                             f"(+{_f(r['added_p99_ms'])}) | ×{_f(r['rps'], 2)} "
                             f"| ×{_f(r['cpu'], 2)} | | |")
    stream = result["scenarios"].get("bidi_stream", {})
    if stream.get("direct") and stream.get("proxy"):
        d, p = stream["direct"], stream["proxy"]
        lines += ["", "StreamingEnqueue per message (cluster guard: mTLS, context owned, "
                      "EnqueueRequest inspected, ops judged): tfgate's own CPU "
                      f"{_f(p['cpu_us_per_call'], 0)} µs at saturation "
                      f"({_f(p['cpu_us_per_call_unloaded'], 0)} µs ping-pong), all of it added "
                      f"to the backend's {_f(d['cpu_us_per_call'], 0)} µs; ping-pong p50 "
                      f"{_f(d['p50_ms'])} ms direct, {_f(p['p50_ms'])} ms through tfgate"]
    m = result["extras"].get("mtls_small_predict")
    if m:
        lines += ["", "mTLS hop with the Python client (small Predict, 1 call at a time / 16 in flight):"]
        for side, s in m.items():
            lines.append(f"- {side}: p50 {_f(s['p50_ms'])} ms, p99 {_f(s['p99_ms'])} ms, "
                         f"{_f(s['rps'], 0)} rps, CPU {_f(s['cpu_us_per_call'], 0)} µs/call "
                         f"({_f(s['cpu_us_per_call_unloaded'], 0)} unloaded)")
    attack = result["extras"].get("under_attack")
    if attack:
        lines += ["", f"Under attack ({attack['attack']}): honest rps {attack['calm']['rps']:,.0f} "
                  f"→ {attack['attacked']['rps']:,.0f} (×{attack['rps_ratio']}), p99 "
                  f"{_f(attack['calm']['p99_ms'])} → {_f(attack['attacked']['p99_ms'])} ms "
                  f"(×{attack['p99_ratio']}), errors {attack['attacked']['errors']}, proxy "
                  f"peak RSS {attack['peak_rss_mb']['calm']} → "
                  f"{attack['peak_rss_mb']['attacked']} MB; proxy cores busy "
                  f"{attack['proxy_cores_busy']['calm']} → {attack['proxy_cores_busy']['attacked']}"
                  f" with {attack['attack_streams_per_s']:,} credential-less streams/s"]
    soak = result["extras"].get("soak")
    if soak:
        lines += ["", f"Soak: {soak['calls']} calls, proxy RSS MB after each chunk "
                      f"{soak['rss_mb_after_each_chunk']}, growth after the first chunk "
                      f"{soak['growth_mb_after_first_chunk']} MB "
                      f"({soak['growth_bytes_per_call']} B/call)"]
    big = result["extras"].get("request_16mib", {})
    for side in ("bare", "proxy"):
        if side in big:
            b = big[side]
            lines.append(f"16 MiB requests, {side}: peak RSS above the RSS before each call "
                         f"{b['peak_extra_rss_mb']} MB = up to {b['ratio_to_request_size']}× "
                         f"the request size ({b['ratio_last_call']}× on the last call)")
    lines += ["", f"audit lines written: {result['audit_lines']}",
              "result: " + ("OK, every response verified" if result["ok"] else
                            "FAILED: " + "; ".join(result["errors"][:5]))]
    return "\n".join(lines)


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}" if digits else f"{value:,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (< 2 minutes in all)")
    parser.add_argument("--layout", choices=("pinned", "shared"), default="pinned",
                        help="pinned: tfgate (or the direct backend) alone on the 2nd CPU, "
                             "backend and load generators on the 1st; shared: nothing pinned")
    parser.add_argument("--json", type=pathlib.Path, help="write the results as JSON here")
    parser.add_argument("--markdown", type=pathlib.Path, help="write the table here too")
    parser.add_argument("--out", type=pathlib.Path, help="working directory (default: a temp dir)")
    parser.add_argument("--workers", type=int, help="tfgate serve --workers (default: tfgate's)")
    parser.add_argument("--threads", type=int, default=128,
                        help="the bare sync forwarder's thread pool (default 128; saturation "
                             "keeps 64 calls in flight)")
    parser.add_argument("--loadgen", choices=("auto", "h2load", "python"), default="auto",
                        help="unary load generator (auto: h2load when installed)")
    parser.add_argument("--no-memory", action="store_true", help="skip the soak and 16 MiB runs")
    parser.add_argument("--no-attack", action="store_true", help="skip the under_attack run")
    parser.add_argument("--no-bare", action="store_true",
                        help="skip the bare raw-bytes forwarder reference (bench/bare.py)")
    args = parser.parse_args(argv)
    try:
        result = run(args)
    except Exception as exc:  # noqa: BLE001 - the bench could not run at all
        log(f"could not run: {type(exc).__name__}: {exc}")
        return 2
    table = markdown(result)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
