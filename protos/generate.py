"""Regenerate proxy/pb/*_pb2.py from protos/proxy/pb/*.proto.

Run as `python protos/generate.py` from the repository root (or pass `--out DIR` to
write elsewhere, which tests/test_protos.py uses to prove the committed code is not
stale). The grpcio-tools version is pinned in pyproject.toml so output is repeatable.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import grpc_tools
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent
SOURCES = sorted((ROOT / "proxy" / "pb").glob("*.proto"))


def generate(out: pathlib.Path) -> list[pathlib.Path]:
    """Compile every .proto under protos/ into `out`; return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        *(str(p.relative_to(ROOT)) for p in SOURCES),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out / "proxy" / "pb").glob("*_pb2.py*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT.parent)
    written = generate(parser.parse_args().out)
    print("\n".join(str(p) for p in written), file=sys.stderr)


if __name__ == "__main__":
    main()
