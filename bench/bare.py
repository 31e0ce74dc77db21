"""A bare raw-bytes forwarder: the floor any Python gRPC proxy pays on this machine.

The perf-facts design with nothing else: a sync server, one generic handler, raw bytes,
a blocking upstream call, no TLS, no authentication, no policy, no audit. The bench runs
it as a reference row so that tfgate's cost can be read against the floor measured in
the same run, on the same machine, instead of against numbers from another machine.

    python -m bench.bare --upstream HOST:PORT --ready-file PATH
"""

from __future__ import annotations

import argparse
import gc
import pathlib
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc


class _Forward(grpc.GenericRpcHandler):
    def __init__(self, channel: grpc.Channel) -> None:
        self._channel = channel
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, details: grpc.HandlerCallDetails):
        handler = self._handlers.get(details.method)
        if handler is None:
            upstream = self._channel.unary_unary(details.method)

            def forward(request: bytes, context: grpc.ServicerContext) -> bytes:
                remaining = context.time_remaining()
                try:
                    return upstream(request, timeout=remaining if remaining < 1e7 else None)
                except grpc.RpcError as err:
                    context.abort(err.code(), err.details())

            handler = self._handlers[details.method] = grpc.unary_unary_rpc_method_handler(forward)
        return handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare")
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--ready-file", type=pathlib.Path, required=True)
    args = parser.parse_args(argv)
    channel = grpc.insecure_channel(args.upstream, options=[
        ("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)])
    server = grpc.server(ThreadPoolExecutor(max_workers=args.threads),
                         handlers=[_Forward(channel)],
                         options=[("grpc.max_receive_message_length", 256 << 20),
                                  ("grpc.max_send_message_length", -1),
                                  ("grpc.so_reuseport", 0)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    gc.collect()
    gc.freeze()
    args.ready_file.write_text(f"127.0.0.1:{port}\n")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop(0).wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
