"""Helpers for the REST front's tests: tfgate configs with a `rest:` section, a running
Service (both fronts, in this process), real HTTPS clients, raw TLS sockets, audit reads."""

from __future__ import annotations

import contextlib
import copy
import json
import pathlib
import socket
import ssl
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx

from proxy.config import validate_config
from proxy.service import Service

if TYPE_CHECKING:
    from tests.conftest import Pki

PREDICT_PATH = "/v1/models/half_plus_two:predict"


def rest_config(base: dict[str, Any], backend: Any, mode: str, audit: pathlib.Path, *,
                client_auth: str = "require", **rest: Any) -> dict[str, Any]:
    """`base` (conftest.base_config) with a REST listener on a free port in `mode`, every
    upstream's REST address set, and the audit log in a file."""
    cfg = copy.deepcopy(base)
    tls = dict(cfg["listen"]["tls"])
    if client_auth == "none":
        tls = {"cert": tls["cert"], "key": tls["key"], "client_auth": "none"}
    cfg["rest"] = {"address": "127.0.0.1:0", "tls": tls, "upstream": mode, **rest}
    for upstream in cfg["upstreams"].values():
        upstream["address"] = backend.address
        upstream["rest_address"] = f"http://{backend.rest_address}"
    cfg["audit"] = {"output": str(audit)}
    return cfg


@contextlib.contextmanager
def running_service(config: dict[str, Any]) -> Iterator[Service]:
    service = Service(validate_config(copy.deepcopy(config))).start()
    try:
        yield service
    finally:
        service.stop(0)


def rest_port(service: Service) -> int:
    assert service.rest is not None
    return service.rest.port


def client(pki: Pki, port: int, who: Any = "alice", **kwargs: Any) -> httpx.Client:
    """An HTTPS client trusting the test CA, presenting `who`'s certificate (None: none)."""
    context = ssl.create_default_context(cafile=str(pki.ca.ca.cert_path))
    issued = getattr(pki, who) if isinstance(who, str) else who
    if issued is not None:
        context.load_cert_chain(str(issued.cert_path), str(issued.key_path))
    return httpx.Client(verify=context, base_url=f"https://localhost:{port}", timeout=30,
                        **kwargs)


def direct(backend: Any, method: str, path: str, body: Any = None) -> httpx.Response:
    with httpx.Client(base_url=f"http://{backend.rest_address}", timeout=30) as c:
        return c.request(method, path, json=body)


def raw_tls(pki: Pki, port: int, who: Any = None) -> ssl.SSLSocket:
    """A raw TLS connection (for requests an HTTP client will not send)."""
    context = ssl.create_default_context(cafile=str(pki.ca.ca.cert_path))
    if who is not None:
        context.load_cert_chain(str(who.cert_path), str(who.key_path))
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    return context.wrap_socket(sock, server_hostname="localhost")


def read_response(sock: socket.socket, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length: status, headers, body."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in
               (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return int(lines[0].split()[1]), headers, rest[:length]


def closed(sock: socket.socket, timeout: float = 30) -> bool:
    """Whether the peer closes the connection (EOF or reset) within `timeout`."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionError, ssl.SSLError):
        return True
    except TimeoutError:
        return False
    return True


def audit_events(path: pathlib.Path, expected: int, timeout: float = 10) -> list[dict[str, Any]]:
    """The audit file's events once it holds at least `expected` (or at the timeout)."""
    end = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= expected or time.monotonic() > end:
            return [json.loads(line) for line in lines]
        time.sleep(0.02)


def wait_for(predicate: Any, timeout: float = 30) -> bool:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True
