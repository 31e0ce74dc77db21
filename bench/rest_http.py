"""Choose the REST front's HTTP server library by measurement (the library's cost alone).

    python -m bench.rest_http [--calls 2000]

Each server runs in its own process (so its CPU time can be read from /proc), over TLS 1.3
with a required client certificate, answering a small predict body with a small JSON
(the handler reads the whole body and returns a constant: the library's cost only). One
client (httpx, one keep-alive connection, sequential calls) measures latency. Then the
same client against the test backend's REST port directly (plaintext, a real model).
tfgate's own REST front is measured by `python -m bench` (scenario `rest_predict`).
Output: per server, server CPU µs per call and latency p50/p99 in ms.
"""

from __future__ import annotations

import argparse
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BODY = b'{"signature_name": "serving_default", "instances": [1.0, 2.0, 5.0]}'
ANSWER = b'{"predictions": [2.5, 3.0, 4.5]}'
PATH = "/v1/models/half_plus_two:predict"


def _tls(d: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(d / "server.pem", d / "server.key")
    context.load_verify_locations(d / "ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def run_aiohttp(d: Path, port: int) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        request.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")

    app = web.Application()
    app.router.add_post(PATH, handle)
    web.run_app(app, host="127.0.0.1", port=port, ssl_context=_tls(d), print=None,
                access_log=None, handle_signals=True)


async def _asgi(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": ANSWER})


def run_uvicorn(d: Path, port: int) -> None:
    import uvicorn

    uvicorn.run(_asgi, host="127.0.0.1", port=port, http="httptools", log_level="error",
                access_log=False, ssl_certfile=str(d / "server.pem"),
                ssl_keyfile=str(d / "server.key"), ssl_ca_certs=str(d / "ca.pem"),
                ssl_cert_reqs=ssl.CERT_REQUIRED, lifespan="off")


def run_hypercorn(d: Path, port: int) -> None:
    import asyncio

    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.certfile, config.keyfile = str(d / "server.pem"), str(d / "server.key")
    config.ca_certs, config.verify_mode = str(d / "ca.pem"), ssl.CERT_REQUIRED
    config.accesslog = config.errorlog = None
    asyncio.run(serve(_asgi, config))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(url: str, calls: int, tls: ssl.SSLContext | None, pid: int | None) -> str:
    with httpx.Client(verify=tls if tls else False, timeout=30) as client:
        wait_until_serving(client, url)
        for _ in range(200):
            client.post(url, content=BODY).raise_for_status()
        before = cpu_seconds(pid) if pid else 0.0
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            client.post(url, content=BODY).raise_for_status()
            times.append(time.perf_counter() - start)
        used = (cpu_seconds(pid) - before) if pid else float("nan")
    q = statistics.quantiles(times, n=100)
    return (f"server CPU {used / calls * 1e6:7.0f} us/call   p50 {q[49] * 1e3:6.2f} ms   "
            f"p99 {q[98] * 1e3:6.2f} ms")


def wait_until_serving(client: httpx.Client, url: str, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while True:
        try:
            client.post(url, content=BODY)
            return
        except httpx.TransportError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        d = Path(args.dir)
        {"aiohttp": run_aiohttp, "uvicorn": run_uvicorn, "hypercorn": run_hypercorn}[
            args.serve](d, args.port)
        return
    from tfgate_dev.devpki import DevPKI
    from tfgate_dev.testbackend.rest_process import start_rest_backend

    d = Path(tempfile.mkdtemp(prefix="tfgate-bench-rest-"))
    ca = DevPKI.create(d / "pki")
    server, user = ca.server(), ca.client("bench", spiffe_id="spiffe://bench/client")
    for name, src in (("server.pem", server.cert_path), ("server.key", server.key_path),
                      ("ca.pem", ca.ca.cert_path)):
        (d / name).write_bytes(Path(src).read_bytes())
    tls = ssl.create_default_context(cafile=str(d / "ca.pem"))
    tls.load_cert_chain(str(user.cert_path), str(user.key_path))
    print(f"{args.calls} sequential small predict calls, one keep-alive connection, "
          f"TLS 1.3 + client certificate (python {sys.version.split()[0]})")
    backend = start_rest_backend(record=False)
    try:
        for port, kind in enumerate(("aiohttp", "uvicorn", "hypercorn"), 18601):
            cmd = [sys.executable, "-m", "bench.rest_http", "--serve", kind, "--dir", str(d),
                   "--port", str(port)]
            proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": os.getcwd()})
            try:
                line = measure(f"https://localhost:{port}{PATH}", args.calls, tls, proc.pid)
                print(f"{kind:30s} {line}")
            finally:
                proc.terminate()
                proc.wait(10)
        line = measure(f"http://{backend.rest_address}{PATH}", args.calls, None,
                       backend.process.pid)
        print(f"{'backend REST direct (plain)':30s} {line}")
    finally:
        backend.stop()


if __name__ == "__main__":
    main()
