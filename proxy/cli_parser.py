"""The `tfgate` command line's arguments and help (the commands are in `cli.py`)."""

from __future__ import annotations

import argparse
import importlib.metadata
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

Command = Callable[[argparse.Namespace], int]

_CONFIG_HELP = "the YAML config file (docs/config.md)"


def version() -> str:
    try:
        return importlib.metadata.version("tfgate")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed as a package)"


def _sub(sub: Any, name: str, func: Command, summary: str, description: str,
         epilog: str | None = None) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=description, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(func=func)
    return parser


def _serve(sub: Any, func: Command) -> None:
    serve = _sub(sub, "serve", func, "run the proxy", (
        "Run the proxy until SIGTERM or SIGINT (drain for server.grace_s, then exit 0; a\n"
        "second signal exits at once). SIGHUP, or a change to the config file or to any\n"
        "file it names, reloads the config without dropping calls (docs/operations.md)."))
    serve.add_argument("--config", type=pathlib.Path, required=True, metavar="FILE",
                       help=_CONFIG_HELP)
    serve.add_argument("--ready-file", type=pathlib.Path, metavar="PATH",
                       help="write the bound address here once serving (useful with port 0)")
    serve.add_argument("--workers", type=int, metavar="N",
                       help="processes sharing the port, each pinned to its own core "
                            "(default: one per available core; N > 1 needs a fixed port)")
    serve.add_argument("--no-pin", action="store_true",
                       help="do not pin workers to cores")
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-cpu", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--shared-limits", type=pathlib.Path, help=argparse.SUPPRESS)


def _check(sub: Any, func: Command) -> None:
    check = _sub(sub, "check", func, "validate a config and the files it names", (
        "Validate the config and everything it names (certificates, keys, JWKS, the\n"
        "policy) without serving. Prints 'FILE: ok (N rules, M upstreams)' and any\n"
        "warnings; exit 2 with every error and the key at fault otherwise."))
    check.add_argument("--config", type=pathlib.Path, required=True, metavar="FILE",
                       help=_CONFIG_HELP)
    check.add_argument("--strict", action="store_true",
                       help="treat warnings (rules that can never match or match more "
                            "than they seem to) as errors")


def _explain(sub: Any, func: Command) -> None:
    explain = _sub(sub, "explain", func, "show why a call would be allowed or denied", (
        "Print the decision the policy would take for the call described, its reason and\n"
        "the granting rule (or the failed check), without making the call. Exit 0 on\n"
        "ALLOW, 1 on DENY (so a CI step can assert either), 2 on a usage error."),
        epilog="example:\n  tfgate explain --config tfgate.yaml --method Predict "
               "--model half_plus_two \\\n      --spiffe spiffe://example.org/ns/team-a/sa/scorer")
    explain.add_argument("--config", type=pathlib.Path, required=True, metavar="FILE",
                         help=_CONFIG_HELP)
    what = explain.add_mutually_exclusive_group(required=True)
    what.add_argument("--method",
                      help="a method name (e.g. Predict), a full path or a glob naming one")
    what.add_argument("--rest", metavar="'VERB PATH'",
                      help="a REST request line instead, routed as the REST front routes "
                           "it, e.g. 'POST /v1/models/m/versions/2:predict' (it names the "
                           "model, version or label)")
    explain.add_argument("--model", help="the model the request names")
    which = explain.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="the model version the request names")
    which.add_argument("--label", help="the version label the request names")
    explain.add_argument("--signature", default="", help="empty means serving_default")
    explain.add_argument("--op", action="append", default=[],
                         help="distributed TF: an op the request runs (repeatable)")
    explain.add_argument("--address", action="append", default=[],
                         help="distributed TF: a host:port its cluster definition names "
                              "(repeatable)")
    identity = explain.add_argument_group("the caller (certificate and/or token)")
    identity.add_argument("--spiffe", metavar="ID", help="the certificate's SPIFFE ID")
    identity.add_argument("--dns", action="append", default=[], metavar="NAME",
                          help="a DNS SAN of the certificate (repeatable)")
    identity.add_argument("--cn", help="the certificate's common name")
    identity.add_argument("--sub", help="the token's subject")
    identity.add_argument("--iss", help="the token's issuer")
    identity.add_argument("--scope", action="append", default=[],
                          help="a scope of the token (repeatable)")


def _demo(sub: Any, func: Command) -> None:
    demo = _sub(sub, "demo", func, "run a self-contained demonstration (dev tooling)", (
        "Start a TensorFlow model server and tfgate on loopback with a throwaway PKI, and\n"
        "show allowed and refused calls. Needs a source checkout with the dev extras."))
    demo.add_argument("--keep", action="store_true", help="keep running for your own calls")
    demo.add_argument("--cluster", action="store_true",
                      help="distributed TF: a TF client and worker through tfgate over mTLS")


def _token(sub: Any, func: Command) -> None:
    token = _sub(sub, "token", func, "dev tokens (dev tooling)",
                 "Development tokens signed with a key from certs/make-dev-pki.")
    actions = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    mint = actions.add_parser(
        "mint", help="print a JWT signed with the dev signing key",
        description=(
            "Print a JWT signed with the dev issuer's key (made by\n"
            "`certs/make-dev-pki --jwt-issuer URL`), for trying tfgate by hand. The key's\n"
            "kid and algorithm come from the JWKS beside it. Dev tooling: never use it\n"
            "for production tokens."),
        epilog="example:\n  tfgate token mint --sub batch-job --scope predict:churn --ttl 3600",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    mint.add_argument("--dir", type=pathlib.Path, metavar="DIR",
                      help="where make-dev-pki wrote its files (default: certs/out of the "
                           "source checkout)")
    mint.add_argument("--key", type=pathlib.Path, metavar="FILE",
                      help="the signing key (default: DIR/signing.key)")
    mint.add_argument("--jwks", type=pathlib.Path, metavar="FILE",
                      help="the JWKS holding its public key (default: DIR/jwks.json)")
    mint.add_argument("--iss", metavar="URL",
                      help="the issuer (default: the one make-dev-pki recorded in "
                           "DIR/jwt-issuer)")
    mint.add_argument("--aud", action="append", metavar="AUD",
                      help="an audience (repeatable; default: tfgate)")
    mint.add_argument("--sub", required=True, help="the subject (who the token is for)")
    mint.add_argument("--scope", action="append", default=[],
                      help="a scope (repeatable; written space-separated in the scope claim)")
    mint.add_argument("--ttl", type=int, default=600, metavar="SECONDS",
                      help="lifetime in seconds (default: 600)")
    mint.set_defaults(func=func)


def build_parser(commands: Mapping[str, Command]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfgate", description="Authenticating gRPC reverse proxy for TensorFlow servers.",
        epilog="`tfgate COMMAND --help` describes each command; docs/operations.md the rest.")
    parser.add_argument("--version", action="version", version=f"tfgate {version()}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _serve(sub, commands["serve"])
    _check(sub, commands["check"])
    _explain(sub, commands["explain"])
    _demo(sub, commands["demo"])
    _token(sub, commands["token"])
    return parser
