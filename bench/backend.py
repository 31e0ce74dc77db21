"""The bench backend: the cheapest Python gRPC server, answering fixed bytes.

A sync `grpc.server` with a generic handler and no (de)serializers: every unary call
gets the same small PredictResponse (GetModelMetadata a one-signature answer, which the
REST front's translated mode reads), and every message on a bidi stream one small reply.
It is not TensorFlow on purpose: the bench measures what tfgate adds, so the backend
must cost as little as possible (docs/performance.md: ~150 µs per call pinned).

    python -m bench.backend --port 0 --ready-file PATH [--threads 16]
"""

from __future__ import annotations

import argparse
import gc
import pathlib
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc

from bench.messages import metadata_response, predict_response

STREAM_REPLY = b"\x08\x01"  # a tiny EnqueueResponse-like message per stream message


class _Handler(grpc.GenericRpcHandler):
    def __init__(self) -> None:
        response, metadata = predict_response(), metadata_response()
        self._unary = grpc.unary_unary_rpc_method_handler(lambda request, context: response)
        self._metadata = grpc.unary_unary_rpc_method_handler(lambda request, context: metadata)
        self._stream = grpc.stream_stream_rpc_method_handler(self._bidi)

    @staticmethod
    def _bidi(requests, context):
        for _ in requests:
            yield STREAM_REPLY

    def service(self, details: grpc.HandlerCallDetails):
        if details.method.endswith("/StreamingEnqueue"):
            return self._stream
        if details.method.endswith("/GetModelMetadata"):  # the REST front's translation
            return self._metadata
        return self._unary


def serve_until_signalled(handler: grpc.GenericRpcHandler, threads: int, port: int,
                          ready_file: pathlib.Path,
                          tls: list[pathlib.Path] | None = None) -> int:
    """Serve `handler` on 127.0.0.1:`port` until SIGTERM/SIGINT; write the bound address
    to `ready_file` once serving. Shared with bench/bare.py, which differs only in handler."""
    server = grpc.server(ThreadPoolExecutor(max_workers=threads), handlers=[handler],
                         options=[("grpc.max_receive_message_length", 256 << 20),
                                  ("grpc.max_send_message_length", -1),
                                  ("grpc.so_reuseport", 0)])
    if tls is None:
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
    else:
        cert, key = (p.read_bytes() for p in tls)
        bound = server.add_secure_port(f"127.0.0.1:{port}",
                                       grpc.ssl_server_credentials([(key, cert)]))
    server.start()
    gc.collect()
    gc.freeze()
    ready_file.write_text(f"127.0.0.1:{bound}\n")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop(0).wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backend")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--ready-file", type=pathlib.Path, required=True)
    args = parser.parse_args(argv)
    return serve_until_signalled(_Handler(), args.threads, args.port, args.ready_file)


if __name__ == "__main__":
    raise SystemExit(main())
