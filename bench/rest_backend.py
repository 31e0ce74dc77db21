"""The bench's REST backend: the cheapest Python HTTP server that reads a predict body and
answers fixed JSON, as the bench's gRPC backend answers fixed bytes (bench/backend.py).

aiohttp on uvloop, plaintext: every POST reads its whole body and gets `ANSWER`; anything
else is 404. Not TensorFlow on purpose: the bench measures what tfgate adds.

    python -m bench.rest_backend --port 0 --ready-file PATH
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import pathlib
import signal

from aiohttp import web

ANSWER = b'{"predictions": [2.5, 3.0, 4.5]}'


async def _predict(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ANSWER, content_type="application/json")


async def serve(port: int, ready_file: pathlib.Path) -> None:
    app = web.Application(client_max_size=256 << 20)
    app.router.add_post("/{tail:.*}", _predict)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    gc.collect()
    gc.freeze()
    ready_file.write_text(f"127.0.0.1:{bound}\n")
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rest_backend")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", type=pathlib.Path, required=True)
    args = parser.parse_args(argv)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.port, args.ready_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
