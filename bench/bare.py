"""Bare raw-bytes forwarders: the floor any Python gRPC proxy pays on this machine.

Nothing but forwarding: one generic handler, raw bytes, no authentication, no policy,
no audit. The bench runs them as reference rows, so that tfgate's cost is read against
floors measured in the same run on the same machine:

- the sync design (`grpc.server` + a thread pool; the cheapest Python design measured,
  docs/performance.md), plaintext or with a TLS listener (`--tls CERT KEY`), so the ratio
  can compare like with like;
- the grpc.aio design (`--aio`, uvloop when installed: tfgate's data plane), with or
  without TLS: what tfgate's own checks cost on top of its design.

    python -m bench.bare --upstream HOST:PORT --ready-file PATH [--tls CERT KEY] [--aio]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import pathlib
import signal
from typing import Any

import grpc
import grpc.aio

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


class _AioForward(grpc.GenericRpcHandler):
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, details: grpc.HandlerCallDetails):
        handler = self._handlers.get(details.method)
        if handler is None:
            upstream = self._channel.unary_unary(details.method)

            async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                remaining = context.time_remaining()
                try:
                    return await upstream(request, timeout=remaining)
                except grpc.aio.AioRpcError as err:
                    await context.abort(err.code(), err.details() or "")

            handler = self._handlers[details.method] = grpc.unary_unary_rpc_method_handler(forward)
        return handler


_OPTIONS: list[tuple[str, Any]] = [("grpc.max_receive_message_length", -1),
                                   ("grpc.max_send_message_length", -1)]


async def _serve_aio(args: argparse.Namespace) -> int:
    channel = grpc.aio.insecure_channel(args.upstream, options=_OPTIONS)
    server = grpc.aio.server(handlers=[_AioForward(channel)], options=[
        ("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 0)])
    port = _add_port(server, args.tls)
    await server.start()
    gc.collect()
    gc.freeze()
    args.ready_file.write_text(f"127.0.0.1:{port}\n")
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, done.set)
    await done.wait()
    await server.stop(0)
    return 0


def _add_port(server: Any, tls: list[pathlib.Path] | None) -> int:
    if tls is None:
        return server.add_insecure_port("127.0.0.1:0")  # type: ignore[no-any-return]
    cert, key = (p.read_bytes() for p in tls)
    return server.add_secure_port(  # type: ignore[no-any-return]
        "127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare")
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--tls", nargs=2, type=pathlib.Path, metavar=("CERT", "KEY"),
                        help="serve TLS with this certificate chain and key")
    parser.add_argument("--aio", action="store_true", help="the grpc.aio design (uvloop)")
    parser.add_argument("--ready-file", type=pathlib.Path, required=True)
    args = parser.parse_args(argv)
    if args.aio:
        try:
            import uvloop
            return uvloop.run(_serve_aio(args))  # type: ignore[no-any-return]
        except ImportError:
            return asyncio.run(_serve_aio(args))
    channel = grpc.insecure_channel(args.upstream, options=_OPTIONS)
    return serve_until_signalled(_Forward(channel), args.threads, 0, args.ready_file,
                                 tls=args.tls)


if __name__ == "__main__":
    raise SystemExit(main())
