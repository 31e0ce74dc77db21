"""``python -m tfgate_dev.testbackend.rest_main``: the backend with ModelServer's REST API too.

    python -m tfgate_dev.testbackend.rest_main --listen 127.0.0.1:0 --rest-listen 127.0.0.1:0
        [--record FILE] [--exit-on-stdin-eof]

The gRPC port is the one of ``python -m tfgate_dev.testbackend`` (same services, same recorder);
the REST port serves rest_server.py, recording into the same file. Once both serve it prints
``REST <address>`` and then ``READY <grpc address>``. In Python: ``start_rest_backend()``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from concurrent import futures
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc

from .models import build_models
from .rest_server import serve_rest
from .server import SERVER_OPTIONS, Recorder, _stop_on_eof, bound_address, generic_handlers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfgate_dev.testbackend.rest_main")
    parser.add_argument("--listen", required=True, help="gRPC host:port or unix:/path")
    parser.add_argument("--rest-listen", required=True, help="REST host:port (0: any free)")
    parser.add_argument("--record", help="append one JSON line per received request here")
    parser.add_argument("--exit-on-stdin-eof", action="store_true")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="tfgate-testbackend-") as tmp:
        models = build_models(Path(tmp))
    recorder = Recorder(args.record)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers(generic_handlers(models, recorder))
    try:
        port = server.add_insecure_port(args.listen)
        rest, rest_address = serve_rest(args.rest_listen, models, recorder)
    except (RuntimeError, OSError) as exc:
        print(f"testbackend: cannot listen: {exc}", file=sys.stderr)
        return 2
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.exit_on_stdin_eof:
        threading.Thread(target=_stop_on_eof, args=(stop,), daemon=True).start()
    print(f"REST {rest_address}", flush=True)
    print(f"READY {bound_address(args.listen, port)}", flush=True)
    while not stop.wait(0.5):
        pass
    rest.shutdown()
    server.stop(grace=2).wait()
    recorder.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
