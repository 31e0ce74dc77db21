"""The `tfgate` command line. The only module that configures logging or exits.

The arguments and their help are in `cli_parser.py`. `serve` logs one line when it
starts, each reload one, the drain on SIGTERM one and the stop one (`oplog.py`).
"""

from __future__ import annotations

import argparse
import gc
import os
import pathlib
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy import cli_parser, oplog, ports
from proxy.config import Config, load_config, parse_address
from proxy.errors import ConfigError, ConfigErrors

if TYPE_CHECKING:
    from proxy.config.lint import LintWarning
    from proxy.runtime import Runtime
    from proxy.service import ReloadOutcome, Service
    from proxy.workers import Plan

log = oplog.get_logger()


def _load(path: pathlib.Path) -> Config:
    return load_config(path)


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a config, including the files it names, without serving."""
    from proxy.runtime import Runtime
    from proxy.tls import upstream_certificates

    cfg = _load(args.config)
    runtime = Runtime.from_config(cfg)
    try:
        runtime.server_credentials()
        upstream_certificates(cfg)
    finally:
        runtime.close()
    warnings = _lint(cfg)
    if warnings and args.strict:
        raise ConfigErrors([ConfigError(w.path, f"{w.message} (--strict)") for w in warnings])
    for warning in warnings:
        print(f"tfgate: warning: {warning.path}: {warning.message}", file=sys.stderr)
    counted = f", {len(warnings)} warnings" if warnings else ""
    print(f"{args.config}: ok ({len(cfg.policy.rules)} rules, "
          f"{len(cfg.upstreams)} upstreams{counted})")
    return 0


def _lint(cfg: Config) -> list[LintWarning]:
    from proxy.config.lint import lint

    return lint(cfg)


def cmd_serve(args: argparse.Namespace) -> int:
    from proxy import workers

    cfg = _load(args.config)
    worker = {} if args.worker_index is None else {"worker": args.worker_index}
    oplog.configure(cfg.logging.format, cfg.logging.level, **worker)
    if args.worker_index is None:
        for warning in _lint(cfg):  # once per instance, not per worker
            log.warning("config", key=warning.path, warning=warning.message)
    if args.worker_index is not None:  # one of the supervisor's workers
        workers.die_with_parent()
        return _serve(cfg, args, cpu=args.worker_cpu, shared_port=True,
                      runtime=_worker_runtime(cfg, args))
    plan = _single_for_cluster(cfg, args, workers.plan(args.workers, pin=not args.no_pin))
    addresses = {"listen.address": cfg.listen.address}
    if cfg.rest is not None:
        addresses["rest.address"] = cfg.rest.address
    unshared = next((key for key, address in addresses.items() if not _shareable(address)), None)
    if plan.workers > 1 and unshared and args.workers is None:
        log.info("one process", reason=f"{unshared} cannot be shared by workers",
                 address=addresses[unshared])
        plan = workers.plan(1, pin=not args.no_pin)
    if plan.workers > 1 and unshared:
        raise ConfigError(unshared, f"--workers {plan.workers} needs a fixed TCP port "
                          "that the workers share (port 0 and unix sockets cannot be shared); "
                          "set one or use --workers 1")
    if plan.workers == 1:
        for address in addresses.values():
            _check_port(address, claim=False)
        return _serve(cfg, args, cpu=plan.cpus[0], shared_port=False)
    claims = [_check_port(address, claim=True) for address in addresses.values()]
    try:  # the claims are held while the workers run
        return _supervise(cfg, args, plan)
    finally:
        for claim in claims:
            if claim is not None:
                claim.release()


def _shareable(address: str) -> bool:
    kind, _, port = parse_address(address)
    return kind == "tcp" and bool(port)


def _single_for_cluster(cfg: Config, args: argparse.Namespace, plan: Plan) -> Plan:
    """Distributed-TF handles are bound to their creators in one process's memory
    (proxy/handles.py): a cluster upstream is served by a single process."""
    from proxy import workers

    if not any(up.kind == "cluster" for up in cfg.upstreams.values()) or plan.workers == 1:
        return plan
    if args.workers is not None:
        raise ConfigError("upstreams", f"--workers {plan.workers}: a cluster upstream needs "
                          "--workers 1 (handle ownership lives in one process's memory)")
    log.info("one process", reason="a cluster upstream is served by one process")
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

    with workers.instance_dir() as shared, workers.shared_metrics(shared):
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
    # absolute(), not resolve(): a Kubernetes mount's symlink target changes on update
    server = Service(cfg, runtime, config_path=args.config.absolute(),
                     reuse_port=shared_port).start()  # ListenError, ConfigError
    server.reload_listeners.append(_apply_logging)
    stopper = _on_signals(server)  # before announcing: a SIGHUP sent once ready is not lost
    gc.collect()
    gc.freeze()  # start-up objects never change: keep them out of every later collection
    log.info("start", address=server.address, config=str(args.config), pid=os.getpid(),
             **({} if server.rest is None else {"rest": server.rest.address}),
             **({} if cpu is None else {"cpu": cpu}))
    if args.ready_file:
        args.ready_file.write_text(server.address + "\n")
    server.wait()
    if (thread := stopper()) is not None:
        thread.join()  # the runtime is closed (audit sinks flushed) before exiting
    log.info("stop", exit_code=0)
    return 0


def _on_signals(server: Service) -> Callable[[], threading.Thread | None]:
    """SIGTERM/SIGINT drain (a second one exits at once), SIGHUP reloads. Handlers only
    start threads: logging from a handler could wait on a lock its own thread holds."""
    stopping: list[threading.Thread] = []

    def drain(name: str) -> None:
        grace = server.runtime.state.config.server.grace_s  # a reload may change it
        log.info("drain", signal=name, grace_s=grace, in_flight=server.runtime.in_flight())
        server.stop(grace)

    def on_signal(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if stopping:
            threading.Thread(target=_exit_now, args=(name,), daemon=True).start()
            return
        stopping.append(threading.Thread(target=drain, args=(name,), daemon=True))
        stopping[0].start()

    def on_hangup(_signum: int, _frame: object) -> None:
        if not stopping:
            threading.Thread(target=server.reload, args=("signal",), daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    return lambda: stopping[0] if stopping else None


def _exit_now(name: str) -> None:
    log.warning("stop", signal=name, forced=True, exit_code=1)
    sys.stderr.flush()
    os._exit(1)  # calls still in flight end with the process


def _apply_logging(outcome: ReloadOutcome) -> None:
    if outcome.ok and outcome.config is not None:
        oplog.configure(outcome.config.logging.format, outcome.config.logging.level)


def cmd_explain(args: argparse.Namespace) -> int:
    """Print the decision the policy would take for a described call; exit 0 on ALLOW,
    1 on DENY (so a CI step can assert either), 2 on a usage or config error."""
    from proxy.explain import explain

    decision, text = explain(_load(args.config), args)
    print(text)
    return 0 if decision.allowed else 1


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from tfgate_dev.demo import run_demo
    except ImportError:
        return _no_dev_tooling("demo")

    if args.cluster and args.keep:
        print("tfgate: demo --cluster has no --keep mode", file=sys.stderr)
        return 2
    return run_demo(keep=args.keep, cluster=args.cluster)


def cmd_token(args: argparse.Namespace) -> int:
    """`tfgate token mint`: a dev token (tfgate_dev is not part of the image)."""
    try:
        from tfgate_dev.tokens import DevToolError, mint_token
    except ImportError:
        return _no_dev_tooling("token mint")
    try:
        print(mint_token(directory=args.dir, key=args.key, jwks=args.jwks, issuer=args.iss,
                         audiences=args.aud or ["tfgate"], subject=args.sub,
                         scopes=args.scope, ttl=args.ttl))
    except DevToolError as exc:
        print(f"tfgate: token mint: {exc}", file=sys.stderr)
        return 2
    return 0


def _no_dev_tooling(command: str) -> int:
    print(f"tfgate: `{command}` is development tooling (the tfgate_dev package), which is "
          "not installed here (the tfgate image ships the proxy only); run it from a source "
          "checkout, e.g. .venv/bin/tfgate " + command, file=sys.stderr)
    return 2


COMMANDS = {"serve": cmd_serve, "check": cmd_check, "explain": cmd_explain,
            "demo": cmd_demo, "token": cmd_token}


def build_parser() -> argparse.ArgumentParser:
    return cli_parser.build_parser(COMMANDS)


def main(argv: list[str] | None = None) -> int:
    oplog.configure()  # console, info: until a config says otherwise
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        for each in exc.errors if isinstance(exc, ConfigErrors) else (exc,):
            print(f"tfgate: config error: {each}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"tfgate: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
