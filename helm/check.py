"""Check the tfgate configs in rendered manifests with tfgate's own checker.

    helm template REL helm/tfgate -f values.yaml | python helm/check.py [--files DIR]

The values schema catches misspelt and mistyped keys; this catches what only tfgate can
judge (a rule that needs tokens while `authn.jwt` is unset, a default deadline above the
maximum, a dtype that can never be allowed), so a bad policy fails in CI, not at pod start.
Each tfgate config in a ConfigMap is checked: `tfgate.yaml`, and in cluster mode each
egress sidecar's `egress-<role>-<i>.yaml` (named `<ConfigMap>/<key>`):

- with `--files DIR`, DIR stands for the pod's /etc/tfgate (tls/tls.crt, tls/tls.key,
  client-ca/ca.crt, jwks/..., upstream-tls/..., extra/<name>/...) and the check is
  `tfgate check`'s: the config, then the certificates, keys and JWKS it names;
- without, every /etc/tfgate/ file the config names is an empty stand-in, and the check is
  the config's alone (the files come from Secrets the cluster holds).

Prints one line per ConfigMap; exits 2 if any is refused, 0 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import pathlib
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run as a script

from proxy.config import Config, ConfigError, validate_config

MOUNT = "/etc/tfgate/"
CONFIG_KEY = "tfgate.yaml"
EGRESS_KEY = re.compile(r"egress-[a-z0-9-]+\.yaml")


def configs_in(manifests: str) -> list[tuple[str, dict[str, Any]]]:
    """(name, parsed tfgate config) for each tfgate config in the manifests: the
    ConfigMap's name for its `tfgate.yaml`, `<ConfigMap>/<key>` for an egress config."""
    found = []
    for obj in yaml.safe_load_all(manifests):
        if not (isinstance(obj, dict) and obj.get("kind") == "ConfigMap"):
            continue
        data = obj.get("data") or {}
        if CONFIG_KEY not in data:
            continue
        name = obj["metadata"]["name"]
        found.append((name, yaml.safe_load(data[CONFIG_KEY])))
        found += [(f"{name}/{key}", yaml.safe_load(text)) for key, text in data.items()
                  if EGRESS_KEY.fullmatch(key)]
    return found


def _mounted_paths(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _mounted_paths(value)
    elif isinstance(node, list):
        for value in node:
            yield from _mounted_paths(value)
    elif isinstance(node, str) and node.startswith(MOUNT):
        yield node


def replaced(node: Any, swap: Callable[[str], str]) -> Any:
    """The config with every string value passed through `swap`."""
    if isinstance(node, dict):
        return {key: replaced(value, swap) for key, value in node.items()}
    if isinstance(node, list):
        return [replaced(value, swap) for value in node]
    return swap(node) if isinstance(node, str) else node


def relocate(node: Any, root: pathlib.Path) -> Any:
    """The config with every /etc/tfgate/ path moved under `root`."""
    return replaced(node, lambda s: str(root / s.removeprefix(MOUNT)) if s.startswith(MOUNT)
                    else s)


def check_config(doc: Any) -> Config:
    """The config alone; its files stand in as empty placeholders. Raises ConfigError."""
    with tempfile.TemporaryDirectory(prefix="tfgate-check-") as tmp:
        root = pathlib.Path(tmp)
        for path in _mounted_paths(doc):
            stand_in = root / path.removeprefix(MOUNT)
            stand_in.parent.mkdir(parents=True, exist_ok=True)
            stand_in.touch()
        return validate_config(relocate(doc, root))


def check_with_files(doc: Any, files: pathlib.Path) -> tuple[int, str]:
    """`tfgate check` on the config, with `files` as /etc/tfgate: (exit code, its output)."""
    from proxy import cli

    with tempfile.TemporaryDirectory(prefix="tfgate-check-") as tmp:
        path = pathlib.Path(tmp) / CONFIG_KEY
        path.write_text(yaml.safe_dump(relocate(doc, files.resolve())))
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = cli.main(["check", "--config", str(path)])
        return code, out.getvalue().strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifests", nargs="*", type=pathlib.Path,
                        help="rendered manifests (default: standard input)")
    parser.add_argument("--files", type=pathlib.Path,
                        help="a directory standing for the pod's /etc/tfgate")
    args = parser.parse_args(argv)
    text = ("\n---\n".join(p.read_text() for p in args.manifests) if args.manifests
            else sys.stdin.read())
    found = configs_in(text)
    if not found:
        print("check: no ConfigMap with tfgate.yaml in the manifests", file=sys.stderr)
        return 2
    failed = 0
    for name, doc in found:
        if args.files is not None:
            code, said = check_with_files(doc, args.files)
            failed += code != 0
            print(f"{name}: {'ok' if code == 0 else 'refused'}: {said}")
            continue
        try:
            cfg = check_config(doc)
        except ConfigError as exc:
            failed += 1
            print(f"{name}: config error: {exc}")
        else:
            print(f"{name}: ok ({len(cfg.policy.rules)} rules, {len(cfg.upstreams)} upstreams)")
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
