"""Hostile HTTP/2 clients for testing and measuring tfgate's gRPC front (test and bench
tooling; never imported by the proxy).

Every attack speaks raw HTTP/2 through the `h2` state machine over a plain TCP socket or
TLS (`ssl`, optional client certificate), so it can do what a grpc client never does:
send HEADERS and no body, dribble a body, stop half-way through a large message, reset
streams as fast as it opens them, flood PINGs or SETTINGS, or open many connections.

Each attack runs in one background thread and is a context manager:

    with half_open(target, streams=64) as attack:
        ...  # measure honest calls while it runs
    print(attack.stats)

Everything is bounded: each attack stops by itself after `duration` seconds, caps what it
opens, and closes every socket it opened on exit. `Stats` counts what happened (and what
the server answered), so a test can assert the server really held or refused the streams.
"""

from __future__ import annotations

import itertools
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable

from h2.settings import SettingCodes

try:  # imported as tests.h2attack (bench/) or as h2attack (tests/ on sys.path)
    from .h2conn import PREDICT, Conn, Stats, Stream, Target, grpc_frame, grpc_prefix, poll_all
except ImportError:
    from h2conn import PREDICT, Conn, Stats, Stream, Target, grpc_frame, grpc_prefix, poll_all

__all__ = ["PREDICT", "Conn", "Running", "Stats", "Stream", "Target", "connection_flood",
           "grpc_frame", "grpc_prefix", "half_open", "partial_message", "ping_flood",
           "probe_window", "rapid_reset", "settings_flood", "slow_body"]

MAX_DURATION_S = 600.0  # no attack runs longer than this, whatever it is asked


class Running:
    """A started attack: a context manager whose exit stops the attack thread, closes its
    sockets and returns; `stats` holds the counters, `error` what stopped it early."""

    def __init__(self, name: str, body: Callable[[Running], None], duration: float) -> None:
        self.name = name
        self.stats = Stats()
        self.conns: list[Conn] = []
        self.deadline = time.monotonic() + min(duration, MAX_DURATION_S)
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._body = body
        self._thread = threading.Thread(target=self._run, name=f"h2attack-{name}", daemon=True)

    def start(self) -> Running:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self.deadline

    def connect(self, target: Target, **kwargs) -> Conn | None:
        try:
            conn = Conn(target, self.stats, **kwargs)
        except (OSError, ssl.SSLError) as exc:
            self.stats.add("connect_failures")
            self.stats.note(f"connect failed: {exc.__class__.__name__}: {exc}")
            return None
        self.conns.append(conn)
        return conn

    def wait(self, seconds: float) -> None:
        """Service every connection for `seconds` (or until stopped)."""
        end = min(time.monotonic() + seconds, self.deadline)
        while self.running and time.monotonic() < end:
            poll_all(self.conns, min(0.05, max(0.0, end - time.monotonic())))

    def _run(self) -> None:
        try:
            self._body(self)
        except BaseException as exc:  # noqa: BLE001 - kept for the caller; the thread must not die loudly
            self.error = exc
        finally:
            for conn in self.conns:
                conn.close()

    def stop(self, timeout: float = 10.0) -> Stats:
        self._stop.set()
        self._thread.join(timeout)
        return self.stats

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def open_count(self) -> int:
        """Streams opened and not (yet) ended by the server."""
        return sum(len(c.open_streams()) for c in self.conns if not c.closed)

    def max_accepted(self) -> int:
        """The most DATA bytes any one stream got through the server's windows."""
        return max((s.sent for c in self.conns for s in c.streams.values()), default=0)


def _fill(run: Running, target: Target, streams: int, per_connection: int,
          open_one: Callable[[Conn], int | None]) -> None:
    """Open connections and streams until `streams` are open (server-closed ones are
    not replaced here)."""
    opened = 0
    while run.running and opened < streams:
        conn = next((c for c in run.conns if not c.closed and c.goaway is None
                     and not c.full and len(c.streams) < per_connection), None)
        if conn is None:
            conn = run.connect(target)
            if conn is None:
                run.wait(0.1)
                continue
            conn.poll(0.05)  # take the server's SETTINGS before opening streams
        if open_one(conn) is None:
            conn.full = True  # refused locally (peer's stream limit): use another
            continue
        opened += 1
    run.stats.note(f"opened {opened} streams")


def _hold(run: Running, target: Target, streams: int, per_connection: int,
          open_one: Callable[[Conn], int | None], reopen_per_s: float,
          tick: Callable[[Running], None] | None = None) -> None:
    """Keep the streams open until the attack ends: service the connections, call
    `tick` (to send more), and replace server-ended streams at `reopen_per_s`."""
    budget, last = 0.0, time.monotonic()
    while run.running:
        run.wait(0.05)
        if tick:
            tick(run)
        if reopen_per_s <= 0:
            continue
        now = time.monotonic()
        budget = min(budget + (now - last) * reopen_per_s, reopen_per_s)
        last = now
        run.conns = [c for c in run.conns if not c.closed]  # lost ones stay closed
        for conn in run.conns:
            for sid in [s.id for s in conn.streams.values() if s.ended is not None]:
                del conn.streams[sid]
        while budget >= 1 and run.open_count() < streams:
            conn = next((c for c in run.conns if c.goaway is None
                         and len(c.streams) < per_connection), None)
            conn = conn or run.connect(target)
            if conn is None or open_one(conn) is None:
                break
            budget -= 1
            run.stats.add("streams_reopened")


def half_open(target: Target, streams: int, *, per_connection: int = 100,
              path: str = PREDICT, authorization: str | None = None,
              reopen_per_s: float = 0.0, ignore_limit: bool = False,
              first_message: bytes | None = None, duration: float = 30.0) -> Running:
    """Open `streams` gRPC requests (HEADERS only) and never send a body. With
    `reopen_per_s`, streams the server ends are replaced (at most that many a second),
    as an attacker holding a valid credential would do. With `first_message`, each
    stream sends that one gRPC message and then stays idle (an open bidi stream).
    `ignore_limit` opens streams past the server's MAX_CONCURRENT_STREAMS."""

    def open_one(conn: Conn) -> int | None:
        sid = conn.open_stream(path, authorization=authorization, ignore_limit=ignore_limit)
        if sid is not None and first_message is not None:
            conn.send(sid, grpc_frame(first_message))
        return sid

    def body(run: Running) -> None:
        _fill(run, target, streams, per_connection, open_one)
        _hold(run, target, streams, per_connection, open_one, reopen_per_s)

    return Running("half_open", body, duration).start()


def slow_body(target: Target, streams: int, *, message_size: int = 1024,
              chunk: int = 1, interval: float = 1.0, per_connection: int = 100,
              path: str = PREDICT, authorization: str | None = None,
              reopen_per_s: float = 0.0, duration: float = 30.0) -> Running:
    """Open `streams` requests and send each one's single message (`message_size` bytes
    declared in its prefix) `chunk` bytes every `interval` seconds, then END_STREAM."""
    payload = grpc_frame(b"\x00" * message_size)
    last_round = [0.0]

    def open_one(conn: Conn) -> int | None:
        return conn.open_stream(path, authorization=authorization)

    def tick(run: Running) -> None:
        if time.monotonic() - last_round[0] < interval:
            return
        last_round[0] = time.monotonic()
        for conn in run.conns:
            for stream in conn.open_streams():
                piece = payload[stream.sent:stream.sent + chunk]
                if piece:
                    conn.send(stream.id, piece,
                              end_stream=stream.sent + len(piece) == len(payload))

    def body(run: Running) -> None:
        _fill(run, target, streams, per_connection, open_one)
        _hold(run, target, streams, per_connection, open_one, reopen_per_s, tick)

    return Running("slow_body", body, duration).start()


def partial_message(target: Target, streams: int, *, declared: int = 4 << 20,
                    send: int | None = None, per_connection: int = 100,
                    path: str = PREDICT, authorization: str | None = None,
                    duration: float = 30.0) -> Running:
    """Open `streams` requests, each declaring one `declared`-byte message and sending
    its first `send` bytes (default: all but the last byte) as fast as the server's flow
    control windows allow, then stopping. `stats['body_bytes_sent']` is what the server
    let in (its buffering); `max_accepted()` the most any one stream got in."""
    body_bytes = grpc_prefix(declared) + b"\x00" * min(declared - 1, send or declared - 1)

    def open_one(conn: Conn) -> int | None:
        sid = conn.open_stream(path, authorization=authorization)
        if sid is not None:
            conn.send(sid, body_bytes)
        return sid

    def tick(run: Running) -> None:  # send more as WINDOW_UPDATEs arrive
        for conn in run.conns:
            for stream in conn.open_streams():
                if stream.sent < len(body_bytes):
                    conn.send(stream.id, body_bytes[stream.sent:])

    def body(run: Running) -> None:
        _fill(run, target, streams, per_connection, open_one)
        _hold(run, target, streams, per_connection, open_one, 0.0, tick)

    return Running("partial_message", body, duration).start()


def rapid_reset(target: Target, *, connections: int = 3, rate: float = 1000.0,
                path: str = PREDICT, authorization: str | None = None,
                with_body: bytes | None = None, reconnect: bool = True,
                duration: float = 10.0) -> Running:
    """HEADERS (plus `with_body` as DATA, if given) then RST_STREAM(CANCEL) at once, at
    `rate` streams per second spread over `connections` connections; lost connections
    are replaced when `reconnect`."""

    def body(run: Running) -> None:
        conns = [run.connect(target) for _ in range(connections)]
        sent, start = 0, time.monotonic()
        while run.running:
            due = int((time.monotonic() - start) * rate) - sent
            for _ in range(min(due, 2000)):
                conn = conns[sent % connections]
                if (conn is None or conn.closed or conn.goaway) and reconnect:
                    conn = conns[sent % connections] = run.connect(target)
                sent += 1
                if conn is None or conn.closed:
                    continue
                sid = conn.open_stream(path, authorization=authorization, ignore_limit=True)
                if sid is not None:
                    if with_body:
                        conn.send(sid, with_body)
                    conn.reset(sid)
            run.stats.counts["attempted"] = sent
            poll_all([c for c in conns if c], 0.001)
            for conn in conns:  # forget finished streams: memory stays bounded
                if conn:
                    conn.streams.clear()

    return Running("rapid_reset", body, duration).start()


def connection_flood(target: Target, connections: int, *, handshake: bool = True,
                     rate: float = 200.0, duration: float = 30.0) -> Running:
    """Open up to `connections` connections from this one peer (`rate` per second) and
    keep them. With `handshake`, each completes TLS and the HTTP/2 preface; without,
    each is a bare TCP connection that never sends a byte (a handshake-timeout probe).
    `stats.events` records when the server closed them."""

    def body(run: Running) -> None:
        bare: list[socket.socket] = []
        try:
            _flood(run, bare)
        finally:
            for sock in bare:
                sock.close()

    def _flood(run: Running, bare: list[socket.socket]) -> None:
        start = time.monotonic()
        opened = 0
        while run.running:
            due = min(connections, int((time.monotonic() - start) * rate) + 1) - opened
            for _ in range(max(0, due)):
                opened += 1
                if handshake:
                    run.connect(target)
                    continue
                try:
                    bare.append(target.tcp(5.0))
                    run.stats.add("connections")
                except OSError:
                    run.stats.add("connect_failures")
            run.wait(0.05)
            for sock in list(bare):
                if _peer_closed(sock):
                    bare.remove(sock)
                    sock.close()
                    run.stats.add("connections_lost")
                    run.stats.note("bare connection closed by peer")
            run.stats.counts["open_now"] = len(bare) + sum(not c.closed for c in run.conns)

    return Running("connection_flood", body, duration).start()


def _peer_closed(sock: socket.socket) -> bool:
    try:
        ready, _, _ = select.select([sock], [], [], 0)
        return bool(ready) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def ping_flood(target: Target, *, connections: int = 1, rate: float = 100.0,
               with_stream: bool = False, duration: float = 10.0) -> Running:
    """PING frames at `rate` per second per connection, without any DATA or HEADERS
    in between (unless `with_stream` opens one idle stream first, as keepalive
    enforcement treats connections with calls differently)."""
    return _frame_flood("ping_flood", target, connections, rate, duration,
                        lambda conn: conn.ping(), with_stream)


def settings_flood(target: Target, *, connections: int = 1, rate: float = 100.0,
                   read: bool = True, duration: float = 10.0) -> Running:
    """SETTINGS frames (alternating INITIAL_WINDOW_SIZE) at `rate` per second per
    connection; each one obliges the server to answer with a SETTINGS ACK. With
    `read=False` the attacker never reads those ACKs, so the server's writes back up
    (its bound on queued "induced" frames then stops it reading: `write_stalls`)."""
    flip = itertools.cycle([65535, 65536])
    return _frame_flood("settings_flood", target, connections, rate, duration,
                        lambda conn: conn.settings({SettingCodes.INITIAL_WINDOW_SIZE: next(flip)}),
                        False, read)


def _frame_flood(name: str, target: Target, connections: int, rate: float,
                 duration: float, send: Callable[[Conn], None], with_stream: bool,
                 read: bool = True) -> Running:
    def body(run: Running) -> None:
        conns = [c for c in (run.connect(target) for _ in range(connections)) if c]
        if with_stream:
            for conn in conns:
                conn.open_stream()
        sent, start = 0, time.monotonic()
        while run.running and any(not c.closed for c in conns):
            due = int((time.monotonic() - start) * rate) - sent
            for _ in range(min(due, 1000)):
                sent += 1
                for conn in conns:
                    if not conn.closed:
                        send(conn)
            if read:
                poll_all(conns, 0.002)
            else:
                time.sleep(0.002)
        run.stats.note(f"{name}: {sent} rounds sent")

    return Running(name, body, duration).start()


def probe_window(target: Target, *, declared: int = 4 << 20, path: str = PREDICT,
                 authorization: str | None = None, settle: float = 1.0,
                 timeout: float = 5.0) -> dict:
    """How many body bytes the server lets one stream send before any application read:
    send a prefix declaring `declared` bytes and push DATA until the windows stay shut
    for `settle` seconds. Returns the bytes accepted, the initial window the server
    advertised, and how the stream ended (if it did)."""
    conn = Conn(target, Stats(), timeout=timeout)
    try:
        conn.poll(0.2)
        initial = conn.h2.remote_settings.initial_window_size
        sid = conn.open_stream(path, authorization=authorization)
        data = grpc_prefix(declared) + b"\x00" * (declared - 1)
        sent, quiet_since, end = 0, time.monotonic(), time.monotonic() + timeout
        while time.monotonic() < end and not conn.closed:
            n = conn.send(sid, data[sent:])
            sent += n
            if n:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > settle:
                break
            stream = conn.streams[sid]
            if stream.ended is not None:
                break
            conn.poll(0.05)
        stream = conn.streams[sid]
        return {"accepted": sent, "initial_window": initial, "status": stream.status,
                "reset": stream.reset, "goaway": conn.goaway}
    finally:
        conn.close()

