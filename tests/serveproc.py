"""A real `tfgate serve` process for operations tests, with a site to change under it.

`Site` is a config directory: a dev PKI, a server certificate, client certificates and a
config file (JSON logs, a fast file watcher) whose policy lets alice call Predict on the
models given. Everything is rewritten atomically (write beside, then rename), as a
deployment tool or Kubernetes does. `Serve` runs `python -m proxy.cli serve` on it and
collects its operational log lines (JSON) as they come; `CallLoop` calls through it from a
thread, each call on a new connection (a new TLS handshake), and records every failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import yaml
from cryptography import x509

from tests.rawbackend import PREDICT
from tests.test_e2e_forwarding import predict_bytes
from tfgate_dev.devpki import DevPKI, Issued

ALICE = "spiffe://tfgate.test/ops/alice"
HANG_GUARD_S = 60


def replace_file(path: pathlib.Path, data: bytes) -> None:
    """Write `data` to `path` atomically: readers see the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class Site:
    """A config directory with its PKI, and the config and files tfgate reads from it.
    `publish` writes files (each atomically); `KubeSite` does it as Kubernetes does."""

    def __init__(self, root: pathlib.Path, upstream: str) -> None:
        self.root = root
        self.files = root / "etc"
        self.files.mkdir(parents=True, exist_ok=True)
        self.ca = DevPKI.create(root / "ca")
        self.alice = self.ca.client("alice", spiffe_id=ALICE)
        self.upstream = upstream
        self.config_path = self.files / "tfgate.yaml"
        self.server = self.ca.server(file_stem="issued-server")
        self.publish({"server.pem": self.server.cert_pem, "server.key": self.server.key_pem,
                      "ca.pem": self.ca.ca.cert_pem})

    def publish(self, files: dict[str, bytes]) -> None:
        for name, data in files.items():
            replace_file(self.files / name, data)

    def write_tls(self, server: Issued) -> None:
        self.publish({"server.pem": server.cert_pem, "server.key": server.key_pem})

    def config(self, models: list[str] | None = None, *, watch: float | None = 0.1,
               address: str = "127.0.0.1:0", **sections: Any) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "listen": {"address": address, "tls": {
                "cert": str(self.files / "server.pem"), "key": str(self.files / "server.key"),
                "client_ca": str(self.files / "ca.pem")}},
            "upstreams": {"backend": {"address": self.upstream}},
            "policy": {"rules": [{"name": "alice", "principals": {"spiffe": [ALICE]},
                                  "methods": ["Predict"], "models": models or ["m"]}]},
            "audit": {"output": str(self.root / "audit.log")},
            "logging": {"format": "json"},
            "server": {"watch_interval_s": watch, "grace_s": 30},
        }
        doc.update(sections)
        return doc

    @staticmethod
    def config_text(doc: dict[str, Any] | str) -> bytes:
        return (doc if isinstance(doc, str) else yaml.safe_dump(doc)).encode()

    def write_config(self, doc: dict[str, Any] | str) -> None:
        self.publish({self.config_path.name: self.config_text(doc)})

    def credentials(self, client: Issued | None = None) -> grpc.ChannelCredentials:
        client = client or self.alice
        return grpc.ssl_channel_credentials(self.ca.ca.cert_pem, client.key_pem, client.cert_pem)


class KubeSite(Site):
    """The files as Kubernetes mounts a ConfigMap/Secret volume: `name -> ..data/name`,
    `..data -> ..<version>`; an update writes a new version directory and renames a new
    `..data` symlink over the old one (one atomic step for every file), then removes the
    old directory. The paths tfgate was given never change."""

    def __init__(self, root: pathlib.Path, upstream: str) -> None:
        self._current: dict[str, bytes] = {}
        self._version = 0
        super().__init__(root, upstream)

    def publish(self, files: dict[str, bytes]) -> None:
        self._current.update(files)
        self._version += 1
        version = self.files / f"..2026_01_01_00_00_{self._version:02d}.{os.getpid()}"
        version.mkdir()
        for name, data in self._current.items():
            (version / name).write_bytes(data)
        data_link = self.files / "..data"
        old = data_link.resolve() if data_link.is_symlink() else None
        tmp = self.files / "..data_tmp"
        tmp.symlink_to(version.name)
        os.replace(tmp, data_link)
        for name in self._current:
            link = self.files / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")
        if old is not None:
            for leftover in old.iterdir():
                leftover.unlink()
            old.rmdir()


def fresh_channel(address: str, credentials: grpc.ChannelCredentials) -> grpc.Channel:
    """A channel on its own new connection (gRPC would otherwise share one)."""
    return grpc.secure_channel(address, credentials,
                               options=[("grpc.use_local_subchannel_pool", 1)])


def predict(address: str, credentials: grpc.ChannelCredentials, model: str = "m",
            metadata: tuple[tuple[str, str], ...] = ()) -> bytes:
    with fresh_channel(address, credentials) as channel:
        response: bytes = channel.unary_unary(PREDICT)(predict_bytes(model), timeout=20,
                                                       metadata=metadata)
        return response


def served_certificate(address: str, site: Site, client: Issued | None = None) -> x509.Certificate:
    """The certificate the listener presents on a new TLS handshake."""
    host, _, port = address.rpartition(":")
    context = ssl.create_default_context(cadata=site.ca.ca.cert_pem.decode())
    client = client or site.alice
    assert client.cert_path is not None and client.key_path is not None
    context.load_cert_chain(client.cert_path, client.key_path)
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        with context.wrap_socket(sock, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def wait_until(check: Callable[[], Any], what: str, timeout: float = HANG_GUARD_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Serve:
    """`tfgate serve --config CONFIG [extra]`, started and serving; its JSON log lines
    are parsed into `events` as they arrive, every other stderr line kept in `other`."""

    def __init__(self, config: pathlib.Path, *extra: str) -> None:
        ready = config.parent / f".ready-{os.getpid()}-{id(self)}"
        ready.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config),
             "--ready-file", str(ready), *extra], stderr=subprocess.PIPE, text=True)
        self.events: list[dict[str, Any]] = []
        self.other: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            wait_until(lambda: ready.exists() or self.proc.poll() is not None, "tfgate to serve")
            if self.proc.poll() is not None:
                raise AssertionError(f"tfgate exited {self.proc.returncode}: {self.stderr()}")
            self.address = wait_until(lambda: ready.read_text().strip(), "the ready file")
        except BaseException:
            self.kill()
            raise

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                event = json.loads(line)
            except ValueError:
                self.other.append(line)
                continue
            if isinstance(event, dict) and event.get("logger") == "tfgate":
                self.events.append(event)
            else:
                self.other.append(line)

    def stderr(self) -> str:
        if self.proc.poll() is not None:
            self._reader.join(5)
        return "".join(self.other) + "\n".join(json.dumps(e) for e in self.events)

    def named(self, name: str, **fields: Any) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e.get("event") == name
                and all(e.get(k) == v for k, v in fields.items())]

    def wait_for(self, name: str, count: int = 1, **fields: Any) -> list[dict[str, Any]]:
        """Wait until `count` events `name` with `fields` have been logged."""
        def seen() -> list[dict[str, Any]] | None:
            found = self.named(name, **fields)
            if self.proc.poll() is not None and len(found) < count:
                raise AssertionError(f"tfgate exited {self.proc.returncode}: {self.stderr()}")
            return found if len(found) >= count else None
        return wait_until(seen, f"{count} {name} {fields} line(s); have {self.events}")

    def reload_and_wait(self, change: Callable[[], None], **fields: Any) -> dict[str, Any]:
        """Make `change`, then wait for the next reload line (with `fields`)."""
        before = len(self.named("reload"))
        change()
        line = self.wait_for("reload", before + 1)[before]
        assert all(line.get(k) == v for k, v in fields.items()), line
        return line

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = HANG_GUARD_S) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def serving(config: pathlib.Path, *extra: str) -> Iterator[Serve]:
    server = Serve(config, *extra)
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()


class CallLoop:
    """Calls Predict in a thread until stopped, each on a new connection; every failure
    is kept. Use as a context manager; `calls` counts the successes."""

    def __init__(self, address: str, credentials: grpc.ChannelCredentials,
                 model: str = "m") -> None:
        self.address, self.credentials, self.model = address, credentials, model
        self.calls = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = predict(self.address, self.credentials, self.model)
                if not response.startswith(b"echo:"):
                    self.failures.append(f"unexpected response {response[:40]!r}")
                self.calls += 1
            except grpc.RpcError as err:
                self.failures.append(f"{err.code()}: {err.details()}")
            self._stop.wait(0.02)  # a gentle loop: the machine is shared

    def wait_calls(self, more: int) -> None:
        """Wait until `more` further calls have succeeded (or some failed)."""
        target = self.calls + more
        wait_until(lambda: self.calls >= target or self.failures, f"{more} more calls")

    def __enter__(self) -> CallLoop:
        self._thread.start()
        self.wait_calls(3)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(HANG_GUARD_S)
