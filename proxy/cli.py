"""The `tfgate` command line. The only module that configures logging or exits."""

from __future__ import annotations

import argparse
import logging
import pathlib
import signal
import sys
import threading

from proxy.config import Config, load_config
from proxy.errors import ConfigError


def _load(path: pathlib.Path) -> Config:
    return load_config(path)


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a config, including the files it names, without serving."""
    from proxy.state import build_state
    from proxy.tls import server_credentials

    cfg = _load(args.config)
    state = build_state(cfg)
    if cfg.listen.tls is not None:
        server_credentials(cfg.listen.tls)
    state.close()
    print(f"{args.config}: ok ({len(cfg.policy.rules)} rules, "
          f"{len(cfg.upstreams)} upstreams)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from proxy.server import RunningServer

    cfg = _load(args.config)
    server = RunningServer(cfg).start()
    print(f"tfgate: serving on {server.address}", file=sys.stderr, flush=True)
    if args.ready_file:
        args.ready_file.write_text(server.address + "\n")
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stopping.is_set():  # a second signal exits at once
            raise SystemExit(1)
        stopping.set()
        threading.Thread(target=server.stop, args=(cfg.server.grace_s,), daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.wait()
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Print the decision the policy would take for a described call."""
    from proxy.explain import explain

    print(explain(_load(args.config), args))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from proxy.demo import run_demo

    return run_demo(keep=args.keep)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfgate", description="Authenticating gRPC reverse proxy for TensorFlow servers.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", type=pathlib.Path, required=True)
    serve.add_argument("--ready-file", type=pathlib.Path,
                       help="write the bound address here once serving")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check", help="validate a config and the files it names")
    check.add_argument("--config", type=pathlib.Path, required=True)
    check.set_defaults(func=cmd_check)

    explain = sub.add_parser("explain", help="show why a call would be allowed or denied")
    explain.add_argument("--config", type=pathlib.Path, required=True)
    explain.add_argument("--method", required=True, help="e.g. Predict or a full path")
    explain.add_argument("--model")
    explain.add_argument("--version", type=int)
    explain.add_argument("--label")
    explain.add_argument("--signature", default="", help="empty means serving_default")
    for flag in ("spiffe", "cn", "sub", "iss"):
        explain.add_argument(f"--{flag}")
    explain.add_argument("--dns", action="append", default=[])
    explain.add_argument("--scope", action="append", default=[])
    explain.set_defaults(func=cmd_explain)

    demo = sub.add_parser("demo", help="run a self-contained demonstration")
    demo.add_argument("--keep", action="store_true", help="keep running for your own calls")
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
