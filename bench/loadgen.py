"""Load generators: h2load for unary calls, a Python gRPC client for the rest.

h2load does not read `grpc-status`: a call refused by tfgate still counts as HTTP 200.
Every h2load run is therefore verified by its DATA bytes, which must equal
calls x (5 + response size): a refused call sends trailers only, no DATA.
The Python client compares every response with the expected bytes.
"""

from __future__ import annotations

import http.client
import pathlib
import queue
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

PREDICT = "/tensorflow.serving.PredictionService/Predict"
STREAMING_ENQUEUE = "/tensorflow.eager.EagerService/StreamingEnqueue"


@dataclass
class Run:
    """One load run: how many calls finished, how fast, and whether they were right."""

    calls: int
    seconds: float
    latencies_us: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float | None:
        if not self.latencies_us:
            return None
        values = sorted(self.latencies_us)
        return values[min(len(values) - 1, int(q * len(values)))] / 1000.0


def have_h2load() -> bool:
    return shutil.which("h2load") is not None


class H2Load:
    """Runs h2load against one URL with a pre-framed gRPC body."""

    def __init__(self, url: str, body: pathlib.Path, response_len: int,
                 headers: Sequence[str], workdir: pathlib.Path, *, h1: bool = False) -> None:
        """`h1`: HTTP/1.1 with a JSON body (the REST front); the response body is checked
        by its length, as a gRPC response is by its DATA bytes."""
        self.url = url
        self.body = body
        self.h1 = h1
        self.expected_data = response_len if h1 else 5 + response_len
        self.headers = (["content-type: application/json", *headers] if h1 else
                        ["content-type: application/grpc", "te: trailers", *headers])
        self.workdir = workdir
        self.in_flight = 1

    def run(self, *, n: int | None = None, duration_s: float | None = None,
            clients: int = 1, streams: int = 1, latencies: bool = False) -> Run:
        self.in_flight = clients * streams
        cmd = ["h2load", "-t", "1", "-c", str(clients), "-m", str(streams), "-d", str(self.body)]
        if self.h1:
            cmd.append("--h1")
        for h in self.headers:
            cmd += ["-H", h]
        cmd += ["-D", f"{duration_s:g}"] if duration_s else ["-n", str(n)]
        log = self.workdir / "h2load-requests.tsv"
        log.unlink(missing_ok=True)
        if latencies:
            cmd += ["--log-file", str(log)]
        t0 = time.monotonic()
        proc = subprocess.run([*cmd, self.url], capture_output=True, text=True,
                              timeout=(duration_s or 0) + 300)
        wall = time.monotonic() - t0
        return self._parse(proc, log if latencies else None, n, wall)

    def _parse(self, proc: subprocess.CompletedProcess, log: pathlib.Path | None,
               n: int | None, wall: float) -> Run:
        out = proc.stdout
        errors: list[str] = []
        m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                      r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
        finished = re.search(r"finished in ([\d.]+)(ms|s)", out)
        data = re.search(r"traffic: .*, \S+ \((\d+)\) data", out)
        if proc.returncode != 0 or not (m and finished and data):
            return Run(0, wall, errors=[f"h2load failed (rc {proc.returncode}): "
                                        f"{(proc.stdout + proc.stderr)[-600:]}"])
        done, succeeded, failed, errored = (int(m.group(i)) for i in (3, 4, 5, 6))
        seconds = float(finished.group(1)) / (1000.0 if finished.group(2) == "ms" else 1.0)
        data_bytes = int(data.group(1))
        if failed or errored or succeeded != done:
            errors.append(f"h2load: {failed} failed, {errored} errored of {done}")
        if n is not None and done != n:
            errors.append(f"h2load: {done} of {n} calls done")
        if self.h1:
            errors += self._check_h1(proc.stdout, data_bytes, succeeded)
        elif data_bytes != succeeded * self.expected_data:
            errors.append(f"response bytes {data_bytes} != {succeeded} x {self.expected_data}: "
                          "some calls did not return the expected response (gRPC error?)")
        lat: list[float] = []
        if log is not None and log.exists():
            for line in log.read_text().splitlines():
                parts = line.split("\t")
                if len(parts) >= 3:
                    if parts[1] != "200":
                        errors.append(f"HTTP status {parts[1]}")
                    lat.append(float(parts[2]))
        return Run(succeeded, seconds, lat, errors[:5])


    def _check_h1(self, out: str, data_bytes: int, succeeded: int) -> list[str]:
        """HTTP/1.1: no 4xx/5xx at all, and whole expected bodies only. A timed run stops
        with responses in flight whose bodies are counted but whose calls are not, so the
        body count may exceed the successes by at most the calls in flight."""
        errors = []
        codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
        if codes is None or int(codes.group(3)) or int(codes.group(4)):
            errors.append(f"HTTP errors: {codes.group(0) if codes else 'no status codes'}")
        bodies, rest = divmod(data_bytes, self.expected_data)
        if rest or not succeeded <= bodies <= succeeded + self.in_flight:
            errors.append(f"response bytes {data_bytes} are not {succeeded} (+ at most "
                          f"{self.in_flight} in flight) x {self.expected_data}")
        return errors


class PyRest:
    """REST calls from Python's http.client (when h2load is missing), one connection per
    client thread, keep-alive; every response body is compared with the expected one."""

    def __init__(self, address: str, path: str, body: bytes, expected: bytes,
                 headers: Sequence[tuple[str, str]] = (), tls: Any = None) -> None:
        self.address, self.path, self.body, self.expected = address, path, body, expected
        self.headers = {"content-type": "application/json", **dict(headers)}
        self.tls = tls

    def _connection(self) -> http.client.HTTPConnection:
        host, port = self.address.rsplit(":", 1)
        if self.tls is None:
            return http.client.HTTPConnection(host, int(port), timeout=30)
        return http.client.HTTPSConnection("localhost", int(port), timeout=30,
                                           context=self.tls)

    def _calls(self, n: int | None, end: float, lat: list[float] | None,
               errors: list[str]) -> int:
        conn, count = self._connection(), 0
        while (n is None or count < n) and time.monotonic() < end:
            t = time.perf_counter()
            try:
                conn.request("POST", self.path, body=self.body, headers=self.headers)
                response = conn.getresponse()
                data = response.read()
                if response.status != 200 or data != self.expected:
                    errors.append(f"HTTP {response.status}: {data[:100]!r}")
            except OSError as err:
                errors.append(f"{type(err).__name__}: {err}")
                conn = self._connection()
            if lat is not None:
                lat.append((time.perf_counter() - t) * 1e6)
            count += 1
        conn.close()
        return count

    def run(self, *, n: int | None = None, duration_s: float | None = None,
            clients: int = 1, streams: int = 1, latencies: bool = False) -> Run:
        end = time.monotonic() + (duration_s or 1e9)
        errors: list[str] = []
        lat: list[float] = []
        t0 = time.monotonic()
        if clients * streams == 1:
            count = self._calls(n, end, lat, errors)
            return Run(count - len(errors), time.monotonic() - t0, lat, errors[:5])
        counts: list[int] = []
        share = None if n is None else -(-n // (clients * streams))
        threads = [threading.Thread(target=lambda: counts.append(
            self._calls(share, end, None, errors))) for _ in range(clients * streams)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return Run(sum(counts) - len(errors), time.monotonic() - t0, [], errors[:5])


class PyUnary:
    """Unary calls from a Python gRPC client (mTLS capable), raw bytes in and out."""

    def __init__(self, channel: grpc.Channel, method: str, request: bytes, expected: bytes,
                 metadata: Sequence[tuple[str, str]] = ()) -> None:
        self._call = channel.unary_unary(method)
        self.request = request
        self.expected = expected
        self.metadata = tuple(metadata)

    def run(self, *, n: int | None = None, duration_s: float | None = None,
            clients: int = 1, streams: int = 1, latencies: bool = False) -> Run:
        window = clients * streams
        if window == 1:
            return self._sequential(n, duration_s)
        return self._windowed(window, n, duration_s)

    def _sequential(self, n: int | None, duration_s: float | None) -> Run:
        lat: list[float] = []
        errors: list[str] = []
        end = time.monotonic() + (duration_s or 1e9)
        count = 0
        t0 = time.monotonic()
        while (n is None or count < n) and time.monotonic() < end:
            t = time.perf_counter()
            try:
                response = self._call(self.request, metadata=self.metadata, timeout=30)
                if response != self.expected:
                    errors.append("unexpected response bytes")
            except grpc.RpcError as err:
                errors.append(f"{err.code().name}: {err.details()}")
            lat.append((time.perf_counter() - t) * 1e6)
            count += 1
        return Run(count - len(errors), time.monotonic() - t0, lat, errors[:5])

    def _windowed(self, window: int, n: int | None, duration_s: float | None) -> Run:
        sem = threading.Semaphore(window)
        lock = threading.Lock()
        errors: list[str] = []
        done = [0]
        end = time.monotonic() + (duration_s or 1e9)

        def finished(fut: grpc.Future) -> None:
            try:
                if fut.result() != self.expected:
                    with lock:
                        errors.append("unexpected response bytes")
            except grpc.RpcError as err:
                with lock:
                    errors.append(f"{err.code().name}: {err.details()}")
            with lock:
                done[0] += 1
            sem.release()

        t0 = time.monotonic()
        sent = 0
        while (n is None or sent < n) and time.monotonic() < end:
            sem.acquire()
            self._call.future(self.request, metadata=self.metadata,
                              timeout=30).add_done_callback(finished)
            sent += 1
        for _ in range(window):
            sem.acquire()
        seconds = time.monotonic() - t0
        return Run(done[0] - len(errors), seconds, [], errors[:5])


class PyBidi:
    """One or more bidi streams of small messages, each answered by one message."""

    def __init__(self, channel: grpc.Channel, message: bytes, expected: bytes,
                 metadata: Sequence[tuple[str, str]] = ()) -> None:
        self._call = channel.stream_stream(STREAMING_ENQUEUE)
        self.message = message
        self.expected = expected
        self.metadata = tuple(metadata)

    def ping_pong(self, n: int) -> Run:
        """One stream; send a message, wait for its reply, repeat: per-message latency."""
        outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

        def requests():
            while (item := outbox.get()) is not None:
                yield item

        responses = self._call(requests(), metadata=self.metadata, timeout=600)
        lat: list[float] = []
        errors: list[str] = []
        t0 = time.monotonic()
        try:
            for _ in range(n):
                t = time.perf_counter()
                outbox.put(self.message)
                reply = next(responses)
                lat.append((time.perf_counter() - t) * 1e6)
                if reply != self.expected:
                    errors.append("unexpected stream reply")
            outbox.put(None)
            extra = sum(1 for _ in responses)
            if extra:
                errors.append(f"{extra} unexpected extra replies")
        except grpc.RpcError as err:
            errors.append(f"{err.code().name}: {err.details()}")
        except StopIteration:
            errors.append("stream ended early")
        return Run(len(lat) - len(errors), time.monotonic() - t0, lat, errors[:5])

    def pipelined(self, streams: int, window: int, duration_s: float) -> Run:
        """`streams` streams, each keeping up to `window` messages in flight."""
        results: list[Run] = []
        lock = threading.Lock()
        start = threading.Barrier(streams + 1)

        def one_stream() -> None:
            credit = threading.Semaphore(window)
            stop = threading.Event()
            sent = [0]

            def requests():
                while not stop.is_set():
                    if credit.acquire(timeout=0.1):
                        if stop.is_set():
                            return
                        sent[0] += 1
                        yield self.message

            got, errors = 0, []
            start.wait()
            t0 = time.monotonic()
            end = t0 + duration_s
            try:
                responses = self._call(requests(), metadata=self.metadata, timeout=duration_s + 60)
                for reply in responses:
                    if reply != self.expected:
                        errors.append("unexpected stream reply")
                    got += 1
                    credit.release()
                    if time.monotonic() >= end and not stop.is_set():
                        stop.set()
            except grpc.RpcError as err:
                errors.append(f"{err.code().name}: {err.details()}")
            if not errors and got != sent[0]:
                errors.append(f"{sent[0]} messages sent, {got} replies")
            with lock:
                results.append(Run(got - len(errors), time.monotonic() - t0, [], errors[:5]))

        threads = [threading.Thread(target=one_stream, daemon=True) for _ in range(streams)]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.monotonic()
        for t in threads:
            t.join(duration_s + 120)
        seconds = time.monotonic() - t0
        return Run(sum(r.calls for r in results), seconds, [],
                   [e for r in results for e in r.errors][:5])
