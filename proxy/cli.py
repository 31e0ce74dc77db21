"""The `tfgate` command line. The only module that configures logging or exits."""

from __future__ import annotations

import argparse
import gc
import logging
import pathlib
import signal
import sys
import threading
from typing import TYPE_CHECKING

from proxy import ports
from proxy.config import Config, load_config, parse_address
from proxy.errors import ConfigError

if TYPE_CHECKING:
    from proxy.runtime import Runtime
    from proxy.workers import Plan


def _load(path: pathlib.Path) -> Config:
    return load_config(path)


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a config, including the files it names, without serving."""
    from proxy.runtime import Runtime

    cfg = _load(args.config)
    runtime = Runtime.from_config(cfg)
    runtime.server_credentials()
    runtime.close()
    print(f"{args.config}: ok ({len(cfg.policy.rules)} rules, "
          f"{len(cfg.upstreams)} upstreams)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from proxy import workers

    cfg = _load(args.config)
    if args.worker_index is not None:  # one of the supervisor's workers
        workers.die_with_parent()
        return _serve(cfg, args, cpu=args.worker_cpu, shared_port=True,
                      runtime=_worker_runtime(cfg, args))
    plan = _single_for_cluster(cfg, args, workers.plan(args.workers, pin=not args.no_pin))
    kind, _, port = parse_address(cfg.listen.address)
    shareable = kind == "tcp" and bool(port)
    if plan.workers > 1 and not shareable and args.workers is None:
        logging.getLogger("tfgate").info(
            "listen.address %s cannot be shared by workers: serving with one process",
            cfg.listen.address)
        plan = workers.plan(1, pin=not args.no_pin)
    if plan.workers > 1 and not shareable:
        raise ConfigError("listen.address", f"--workers {plan.workers} needs a fixed TCP port "
                          "that the workers share (port 0 and unix sockets cannot be shared); "
                          "set one or use --workers 1")
    if plan.workers == 1:
        _check_port(cfg.listen.address, claim=False)
        return _serve(cfg, args, cpu=plan.cpus[0], shared_port=False)
    claim = _check_port(cfg.listen.address, claim=True)  # held while the workers run
    try:
        return _supervise(cfg, args, plan)
    finally:
        if claim is not None:
            claim.release()


def _single_for_cluster(cfg: Config, args: argparse.Namespace, plan: Plan) -> Plan:
    """Distributed-TF handles are bound to their creators in one process's memory
    (proxy/handles.py): a cluster upstream is served by a single process."""
    from proxy import workers

    if not any(up.kind == "cluster" for up in cfg.upstreams.values()) or plan.workers == 1:
        return plan
    if args.workers is not None:
        raise ConfigError("upstreams", f"--workers {plan.workers}: a cluster upstream needs "
                          "--workers 1 (handle ownership lives in one process's memory)")
    logging.getLogger("tfgate").info("a cluster upstream is served by one process")
    return workers.plan(1, pin=not args.no_pin)


def _check_port(address: str, *, claim: bool) -> ports.PortClaim | None:
    """Refuse a fixed TCP port someone holds with ListenError (one line, exit 1); with
    `claim`, also lock it for this instance (ports.py)."""
    kind, host, port = parse_address(address)
    if kind != "tcp" or not port or host is None:
        return None
    if not claim:
        ports.probe(address, host, port)
        return None
    return ports.claim(address, host, port)


def _supervise(cfg: Config, args: argparse.Namespace, plan: Plan) -> int:
    """Run the workers, sharing one limit table in a file this process creates."""
    from proxy import shared_limits, workers

    with workers.instance_dir() as shared:
        table = shared_limits.create(shared / "limits", cfg.limits.table_size, plan.workers)

        def worker_argv(index: int, cpu: int | None, ready: pathlib.Path) -> list[str]:
            argv = [sys.executable, "-m", "proxy.cli", "serve", "--config", str(args.config),
                    "--workers", str(plan.workers), "--worker-index", str(index),
                    "--ready-file", str(ready), "--shared-limits", str(table)]
            return argv + (["--worker-cpu", str(cpu)] if cpu is not None else [])

        return workers.supervise(worker_argv, plan, args.ready_file, cfg.listen.address)


def _worker_runtime(cfg: Config, args: argparse.Namespace) -> Runtime | None:
    """A worker's runtime over the instance's shared limit table (None: its own)."""
    if args.shared_limits is None:
        return None
    from proxy.runtime import Runtime
    from proxy.shared_limits import SharedLimitState
    from proxy.state import Shared, build_state

    limits = SharedLimitState(args.shared_limits, args.worker_index)
    return Runtime(build_state(cfg, Shared(limits=limits)))


def _serve(cfg: Config, args: argparse.Namespace, *, cpu: int | None, shared_port: bool,
           runtime: Runtime | None = None) -> int:
    """Serve in this process, pinned to `cpu` before gRPC starts any thread."""
    from proxy import workers
    from proxy.service import Service

    workers.pin_to(cpu)
    server = Service(cfg, runtime, config_path=args.config.resolve(),
                     reuse_port=shared_port).start()  # ListenError
    gc.collect()
    gc.freeze()  # start-up objects never change: keep them out of every later collection
    where = "" if cpu is None else f" (CPU {cpu})"
    print(f"tfgate: serving on {server.address}{where}", file=sys.stderr, flush=True)
    if args.ready_file:
        args.ready_file.write_text(server.address + "\n")
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stopping.is_set():  # a second signal exits at once
            raise SystemExit(1)
        stopping.set()
        threading.Thread(target=server.stop, args=(cfg.server.grace_s,), daemon=True).start()

    def on_hangup(signum: int, _frame: object) -> None:
        threading.Thread(target=server.reload, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    server.wait()
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Print the decision the policy would take for a described call."""
    from proxy.explain import explain

    _, text = explain(_load(args.config), args)
    print(text)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from tfgate_dev.demo import run_demo
    except ImportError:
        print("tfgate: the demo is development tooling (tfgate_dev), not installed here; "
              "run it from a source checkout: make demo", file=sys.stderr)
        return 2

    if args.cluster and args.keep:
        print("tfgate: demo --cluster has no --keep mode", file=sys.stderr)
        return 2
    return run_demo(keep=args.keep, cluster=args.cluster)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfgate", description="Authenticating gRPC reverse proxy for TensorFlow servers.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", type=pathlib.Path, required=True)
    serve.add_argument("--ready-file", type=pathlib.Path,
                       help="write the bound address here once serving")
    serve.add_argument("--workers", type=int, metavar="N",
                       help="processes sharing the port, each pinned to its own core "
                            "(default: one per available core; N > 1 needs a fixed port)")
    serve.add_argument("--no-pin", action="store_true",
                       help="do not pin workers to cores")
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-cpu", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--shared-limits", type=pathlib.Path, help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check", help="validate a config and the files it names")
    check.add_argument("--config", type=pathlib.Path, required=True)
    check.set_defaults(func=cmd_check)

    explain = sub.add_parser("explain", help="show why a call would be allowed or denied")
    explain.add_argument("--config", type=pathlib.Path, required=True)
    explain.add_argument("--method", required=True, help="e.g. Predict or a full path")
    explain.add_argument("--model")
    which = explain.add_mutually_exclusive_group()
    which.add_argument("--version", type=int)
    which.add_argument("--label")
    explain.add_argument("--signature", default="", help="empty means serving_default")
    explain.add_argument("--op", action="append", default=[],
                         help="distributed TF: an op the request runs (repeatable)")
    explain.add_argument("--address", action="append", default=[],
                         help="distributed TF: a host:port its cluster definition names")
    for flag in ("spiffe", "cn", "sub", "iss"):
        explain.add_argument(f"--{flag}")
    explain.add_argument("--dns", action="append", default=[])
    explain.add_argument("--scope", action="append", default=[])
    explain.set_defaults(func=cmd_explain)

    demo = sub.add_parser("demo", help="run a self-contained demonstration")
    demo.add_argument("--keep", action="store_true", help="keep running for your own calls")
    demo.add_argument("--cluster", action="store_true",
                      help="distributed TF: a TF client and worker through tfgate over mTLS")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="tfgate: %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"tfgate: config error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"tfgate: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
