"""A bare raw-bytes forwarder: the floor any Python gRPC proxy pays on this machine.

The cheapest design of docs/performance.md with nothing else: a sync server, one generic handler, raw bytes,
a blocking upstream call, no TLS, no authentication, no policy, no audit. The bench runs
it as a reference row so that tfgate's cost can be read against the floor measured in
the same run, on the same machine, instead of against numbers from another machine.

    python -m bench.bare --upstream HOST:PORT --ready-file PATH
"""

from __future__ import annotations

import argparse
import pathlib

import grpc

from bench.backend import serve_until_signalled


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
    return serve_until_signalled(_Forward(channel), args.threads, 0, args.ready_file)


if __name__ == "__main__":
    raise SystemExit(main())
