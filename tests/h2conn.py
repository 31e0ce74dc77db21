"""The raw HTTP/2 client under tests/h2attack.py: where to connect (`Target`), one
hand-driven connection (`Conn`, on the `h2` state machine) and the counters every attack
keeps (`Stats`). Test and bench tooling only; the proxy never imports it.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator, Sequence

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

PREDICT = "/tensorflow.serving.PredictionService/Predict"


@dataclasses.dataclass(frozen=True)
class Target:
    """Where to attack, and how to connect: TLS when `ca` is given (a PEM bundle), with a
    client certificate when `cert` and `key` (PEM file paths) are."""

    host: str
    port: int
    ca: bytes | None = None
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None

    @property
    def tls(self) -> bool:
        return self.ca is not None

    def tcp(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def connect(self, timeout: float = 5.0) -> socket.socket:
        """A connected socket, TLS-wrapped (ALPN h2) when this target is TLS."""
        sock = self.tcp(timeout)
        if not self.tls:
            return sock
        ctx = ssl.create_default_context(cadata=self.ca.decode())
        ctx.set_alpn_protocols(["h2"])
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key)
        try:
            return ctx.wrap_socket(sock, server_hostname=self.server_name or self.host)
        except BaseException:
            sock.close()
            raise


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message (uncompressed)."""
    return struct.pack(">BI", 0, len(message)) + message


def grpc_prefix(declared: int) -> bytes:
    """Only the 5-byte prefix, declaring a message of `declared` bytes."""
    return struct.pack(">BI", 0, declared)


class Stats:
    """Counters of one attack, safe to read while it runs (`snapshot()` copies them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        self.grpc_status: collections.Counter[str] = collections.Counter()
        self.reset_codes: collections.Counter[str] = collections.Counter()
        self.goaway_codes: collections.Counter[str] = collections.Counter()
        self.events: list[tuple[float, str]] = []  # (seconds since start, what), capped
        self.started = time.monotonic()

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def note(self, what: str) -> None:
        with self._lock:
            if len(self.events) < 1000:
                self.events.append((round(time.monotonic() - self.started, 3), what))

    def count_in(self, counter: collections.Counter[str], key: str) -> None:
        with self._lock:
            counter[key] += 1

    def __getitem__(self, key: str) -> int:
        return self.counts[key]

    def snapshot(self) -> dict:
        with self._lock:
            return {"counts": dict(self.counts), "grpc_status": dict(self.grpc_status),
                    "reset_codes": dict(self.reset_codes),
                    "goaway_codes": dict(self.goaway_codes), "events": list(self.events)}

    def __repr__(self) -> str:
        snap = self.snapshot()
        snap.pop("events")
        return f"Stats({snap})"


class Stream:
    """What the server did with one stream we opened."""

    __slots__ = ("ended", "id", "opened", "reset", "sent", "status")

    def __init__(self, stream_id: int) -> None:
        self.id = stream_id
        self.opened = time.monotonic()
        self.ended: float | None = None  # when the server closed it (trailers or reset)
        self.status: str | None = None   # grpc-status it answered
        self.reset: str | None = None    # RST_STREAM code it sent
        self.sent = 0                    # DATA bytes the server's windows let us send


class Conn:
    """One HTTP/2 client connection driven by hand. Not thread-safe: one attack thread
    owns it. Socket errors mark it closed; they never raise out of `poll` or `flush`."""

    def __init__(self, target: Target, stats: Stats, *, timeout: float = 5.0,
                 settings: dict[int, int] | None = None) -> None:
        self.target, self.stats = target, stats
        self.sock = target.connect(timeout)
        self.sock.settimeout(timeout)  # a write blocked this long: the peer stopped reading
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.local_settings.enable_push = 0
        self.h2.initiate_connection()
        if settings:
            self.h2.update_settings(settings)
        self.streams: dict[int, Stream] = {}
        self._inbox = bytearray()
        self.closed = False
        self.full = False  # the peer's MAX_CONCURRENT_STREAMS stopped us opening more
        self.goaway: str | None = None
        stats.add("connections")
        self.flush()

    # -- sending ---------------------------------------------------------------------

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if not data or self.closed:
            return
        try:
            self.sock.sendall(data)
            self.stats.add("bytes_sent", len(data))
        except TimeoutError:
            self.stats.add("write_stalls")
            self._lost("write stalled")
        except OSError as exc:
            self._lost(f"write: {exc.__class__.__name__}")

    def open_stream(self, path: str = PREDICT, *, authorization: str | None = None,
                    metadata: Sequence[tuple[str, str]] = (), end_stream: bool = False,
                    ignore_limit: bool = False) -> int | None:
        """Send gRPC request HEADERS; None when the connection cannot take another
        stream (closed, GOAWAY, or at the peer's MAX_CONCURRENT_STREAMS unless
        `ignore_limit`, which sends the HEADERS anyway to test the server's enforcement)."""
        if self.closed or self.goaway is not None:
            return None
        if ignore_limit:
            self.h2.remote_settings[SettingCodes.MAX_CONCURRENT_STREAMS] = 2**31 - 1
            self.h2.remote_settings.acknowledge()
        scheme = "https" if self.target.tls else "http"
        headers = [(":method", "POST"), (":scheme", scheme), (":path", path),
                   (":authority", f"{self.target.host}:{self.target.port}"),
                   ("content-type", "application/grpc"), ("te", "trailers")]
        if authorization:
            headers.append(("authorization", authorization))
        headers.extend(metadata)
        try:
            sid = self.h2.get_next_available_stream_id()
            self.h2.send_headers(sid, headers, end_stream=end_stream)
        except h2.exceptions.TooManyStreamsError:
            self.stats.add("stream_limit_hit")
            return None
        except h2.exceptions.ProtocolError:
            return None
        self.streams[sid] = Stream(sid)
        self.stats.add("streams_opened")
        self.flush()
        return sid

    def send(self, sid: int, data: bytes, *, end_stream: bool = False) -> int:
        """Send as much of `data` as flow control allows now; returns the bytes sent.
        END_STREAM goes with the last byte only when all of `data` fitted."""
        stream = self.streams.get(sid)
        if self.closed or stream is None or stream.ended is not None:
            return 0
        sent = 0
        try:
            while sent < len(data):
                room = min(self.h2.local_flow_control_window(sid),
                           self.h2.max_outbound_frame_size, len(data) - sent)
                if room <= 0:
                    break
                last = end_stream and sent + room == len(data)
                self.h2.send_data(sid, data[sent:sent + room], end_stream=last)
                sent += room
            if end_stream and not data:
                self.h2.end_stream(sid)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass
        stream.sent += sent
        self.stats.add("body_bytes_sent", sent)
        self.flush()
        return sent

    def reset(self, sid: int, code: ErrorCodes = ErrorCodes.CANCEL) -> None:
        try:
            self.h2.reset_stream(sid, code)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        stream = self.streams.pop(sid, None)
        if stream is not None and stream.ended is None:
            stream.ended = time.monotonic()
        self.stats.add("streams_reset")
        self.flush()

    def ping(self) -> None:
        self.h2.ping(struct.pack(">Q", next(_PING_IDS)))
        self.stats.add("pings_sent")
        self.flush()

    def settings(self, changes: dict[int, int]) -> None:
        self.h2.update_settings(changes)
        self.stats.add("settings_sent")
        self.flush()

    # -- receiving -------------------------------------------------------------------

    def fileno(self) -> int:
        return self.sock.fileno()

    def poll(self, timeout: float = 0.0) -> None:
        """Read and handle whatever the server sent within `timeout` seconds."""
        if self.closed:
            return
        try:
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if ready:
                self.receive()
        except (OSError, ValueError) as exc:
            self._lost(f"select: {exc.__class__.__name__}")

    def receive(self) -> None:
        """One read from the socket (call when it is readable)."""
        try:
            data = self.sock.recv(65536)
            while isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
                data += self.sock.recv(self.sock.pending())
        except (ssl.SSLWantReadError, BlockingIOError):
            return
        except OSError as exc:
            self._lost(f"read: {exc.__class__.__name__}")
            return
        if not data:
            self._lost("peer closed")
            return
        self._inbox += data
        for frame in self._frames():
            try:
                events = self.h2.receive_data(frame)
            except h2.exceptions.ProtocolError as exc:
                if self.goaway is not None:
                    continue  # h2 refuses frames after GOAWAY; the server may still send some
                self._lost(f"protocol error: {exc.__class__.__name__}: {exc}")
                return
            for event in events:
                self._handle(event)
        self.flush()

    def _frames(self) -> Iterator[bytes]:
        """Split the inbox into whole frames, so one frame h2 refuses (after a GOAWAY)
        does not lose the events of the others read with it."""
        while len(self._inbox) >= 9:
            size = 9 + int.from_bytes(self._inbox[:3], "big")
            if len(self._inbox) < size:
                return
            frame, self._inbox = bytes(self._inbox[:size]), self._inbox[size:]
            yield frame

    def _handle(self, event: h2.events.Event) -> None:
        stats = self.stats
        if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
            status = dict(event.headers).get("grpc-status")
            if status is not None:
                stats.count_in(stats.grpc_status, status)
                self._end(event.stream_id, status=status)
        elif isinstance(event, h2.events.DataReceived):
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            code = _name(event.error_code)
            stats.count_in(stats.reset_codes, code)
            self._end(event.stream_id, reset=code)
        elif isinstance(event, h2.events.StreamEnded):
            self._end(event.stream_id)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = _name(event.error_code)
            stats.count_in(stats.goaway_codes, self.goaway)
            stats.note(f"goaway {self.goaway} last_stream={event.last_stream_id}")
        elif isinstance(event, h2.events.PingAckReceived):
            stats.add("ping_acks")
        elif isinstance(event, h2.events.PingReceived):
            stats.add("server_pings")
        elif isinstance(event, h2.events.SettingsAcknowledged):
            stats.add("settings_acked")

    def _end(self, sid: int, *, status: str | None = None, reset: str | None = None) -> None:
        stream = self.streams.get(sid)
        if stream is None or stream.ended is not None:
            return
        stream.ended = time.monotonic()
        stream.status, stream.reset = status or stream.status, reset
        self.stats.add("streams_ended_by_server")

    def _lost(self, why: str) -> None:
        if not self.closed:
            self.closed = True
            self.stats.add("connections_lost")
            self.stats.note(f"connection lost: {why}")
            self._close_socket()

    def open_streams(self) -> list[Stream]:
        return [s for s in self.streams.values() if s.ended is None]

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.h2.close_connection()
                self.sock.sendall(self.h2.data_to_send())
            except (OSError, h2.exceptions.ProtocolError):
                pass
            self._close_socket()

    def _close_socket(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


_PING_IDS = itertools.count(1)


def _name(code: int | ErrorCodes) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return str(code)


def poll_all(conns: Sequence[Conn], timeout: float) -> None:
    """Wait up to `timeout` for any of `conns` to have data and handle what arrived."""
    live = [c for c in conns if not c.closed]
    if not live:
        time.sleep(timeout)
        return
    try:
        ready, _, _ = select.select(live, [], [], timeout)
    except (OSError, ValueError):
        ready = live
    for conn in ready:
        conn.receive()
    for conn in live:
        if isinstance(conn.sock, ssl.SSLSocket) and not conn.closed and conn.sock.pending():
            conn.receive()
