"""Addresses, debug URLs, thread counts and server-wide settings inside cluster and
session configs.

Every ClusterDef the server receives is an instruction to dial each host:port in it
(master to workers, worker to worker, worker back to the client), so each becomes an
`Address`. A RunOptions/DebugOptions watch inserts Debug ops that write to `file://` or
dial `grpc://` URLs: its ops become `OpUse`s and its URLs `DebugUrl`s.
"""

from __future__ import annotations

from proxy.inspect.distributed.facts import Collector, limit_exceeded, quote
from proxy.pb import distributed_config_pb2 as config_pb2

# Threads a ConfigProto may ask for. A worker makes an eager context's inter-op pool
# from CreateContext's default_session_config at once (2,000 asked: 2,000 threads,
# TF 2.21), so a huge count stops the server for every tenant.
MAX_THREADS = 1024


def cluster(col: Collector, cluster_def: config_pb2.ClusterDef, where: str) -> None:
    for j, job in enumerate(cluster_def.job):
        for task in sorted(job.tasks):
            col.address(job.tasks[task], job.name, task,
                        f"{where}.job[{j}] {quote(job.name)}.tasks[{task}]")


def config(col: Collector, proto: config_pb2.ConfigProto, where: str) -> None:
    for name in ("inter_op_parallelism_threads", "intra_op_parallelism_threads"):
        threads = getattr(proto, name)
        if threads > MAX_THREADS:
            raise limit_exceeded(f"{where}.{name}: {threads} threads > max {MAX_THREADS}")
    if proto.HasField("cluster_def"):
        cluster(col, proto.cluster_def, f"{where}.cluster_def")
    if proto.experimental.tf2xla_dump_dir:
        col.setting("tf2xla_dump_dir", proto.experimental.tf2xla_dump_dir,
                    f"{where}.experimental.tf2xla_dump_dir")


def server_def(col: Collector, proto: config_pb2.ServerDef, where: str) -> None:
    if proto.HasField("cluster"):
        cluster(col, proto.cluster, f"{where}.cluster")
    if proto.HasField("default_session_config"):
        config(col, proto.default_session_config, f"{where}.default_session_config")


def debug_options(col: Collector, proto: config_pb2.DebugOptions, where: str) -> None:
    for i, watch in enumerate(proto.debug_tensor_watch_opts):
        at = f"{where}.debug_tensor_watch_opts[{i}]"
        for j, spec in enumerate(watch.debug_ops):
            # "DebugNumericSummary(mute_if_healthy=true)": the op name, then its options.
            col.op(spec.partition("(")[0].strip(), f"{at}.debug_ops[{j}]")
        for j, url in enumerate(watch.debug_urls):
            col.url(url, f"{at}.debug_urls[{j}]")


def run_options(col: Collector, proto: config_pb2.RunOptions, where: str) -> None:
    if proto.HasField("debug_options"):
        debug_options(col, proto.debug_options, f"{where}.debug_options")
