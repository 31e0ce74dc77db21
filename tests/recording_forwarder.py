"""A test-only raw-bytes gRPC forwarder that records what passes through it.

It accepts any method on `listen`, forwards the exact request bytes to `upstream` with
the same call kind (unary/stream on either side; a method missing from `kinds` is
relayed as stream-stream, which carries any kind on the wire), relays responses and
the final status back, and records each call: route label, method path, call kind,
every request and response message, and the status. Records stay in memory
(`calls()`) and, when `record_dir` is given, are written there as one `.bin` file per
message plus an `index.jsonl` line per call.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import pathlib
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc

_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
_SEQUENCE = itertools.count()
# grpcio reports "no deadline" as a huge time_remaining(), which is no usable timeout.
_NO_DEADLINE_S = 10**8


def _timeout(context: grpc.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None or remaining > _NO_DEADLINE_S else max(remaining, 0.0)


@dataclass
class RecordedCall:
    route: str
    method: str
    kind: str
    requests: list[bytes] = field(default_factory=list)
    responses: list[bytes] = field(default_factory=list)
    code: str = ""
    seq: int = field(default_factory=lambda: next(_SEQUENCE))


class RecordingForwarder(grpc.GenericRpcHandler):
    def __init__(self, listen: str, upstream: str, *, kinds: dict[str, str], route: str,
                 record_dir: pathlib.Path | None = None) -> None:
        self.listen, self.route, self.kinds = listen, route, kinds
        self.record_dir = record_dir
        self._channel = grpc.insecure_channel(upstream, options=_OPTIONS)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), options=_OPTIONS,
                                   handlers=[self])
        self._lock = threading.Lock()
        if record_dir is not None:
            record_dir.mkdir(parents=True, exist_ok=True)
        self._calls: list[RecordedCall] = []
        self._start: dict[int, tuple[int, int]] = {}

    def start(self) -> RecordingForwarder:
        if self._server.add_insecure_port(self.listen) == 0:
            raise RuntimeError(f"cannot listen on {self.listen}")
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(0).wait(10)
        self._channel.close()

    def calls(self) -> list[RecordedCall]:
        """Calls with messages since the last clear(); a stream that was open then shows
        only its later messages."""
        with self._lock:
            calls, start = list(self._calls), dict(self._start)
        views = []
        for call in calls:
            req, resp = start.get(call.seq, (0, 0))
            if call.seq in start and len(call.requests) == req and len(call.responses) == resp:
                continue
            views.append(RecordedCall(call.route, call.method, call.kind, call.requests[req:],
                                      call.responses[resp:], call.code, call.seq))
        return views

    def clear(self) -> None:
        """Forget finished calls, and what open streams carried so far."""
        with self._lock:
            self._calls = [c for c in self._calls if not c.code]
            self._start = {c.seq: (len(c.requests), len(c.responses)) for c in self._calls}

    # -- one handler per call kind --------------------------------------------------------

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method
        kind = self.kinds.get(method, "stream_stream")
        make = getattr(grpc, f"{kind}_rpc_method_handler")
        return make(getattr(self, f"_{kind}")(method, kind))

    def _begin(self, method: str, kind: str) -> RecordedCall:
        call = RecordedCall(self.route, method, kind)
        with self._lock:
            self._calls.append(call)
        return call

    def _keep(self, call: RecordedCall, direction: str, message: bytes) -> None:
        messages = call.requests if direction == "req" else call.responses
        if self.record_dir is not None:
            (self.record_dir / f"{self._stem(call)}-{direction}{len(messages):04d}.bin"
             ).write_bytes(message)
        messages.append(message)

    def _requests(self, call: RecordedCall, requests: Iterator[bytes]) -> Iterator[bytes]:
        for message in requests:
            self._keep(call, "req", message)
            yield message

    def _unary_unary(self, method: str, kind: str) -> Any:
        stub = self._channel.unary_unary(method)

        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            call = self._begin(method, kind)
            self._keep(call, "req", request)
            with self._relay(call, context):
                response = stub(request, timeout=_timeout(context))
                self._keep(call, "resp", response)
            return response
        return handle

    def _stream_unary(self, method: str, kind: str) -> Any:
        stub = self._channel.stream_unary(method)

        def handle(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
            call = self._begin(method, kind)
            with self._relay(call, context):
                response = stub(self._requests(call, requests), timeout=_timeout(context))
                self._keep(call, "resp", response)
            return response
        return handle

    def _unary_stream(self, method: str, kind: str) -> Any:
        stub = self._channel.unary_stream(method)

        def handle(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            call = self._begin(method, kind)
            self._keep(call, "req", request)
            yield from self._stream_back(call, context, stub(
                request, timeout=_timeout(context)))
        return handle

    def _stream_stream(self, method: str, kind: str) -> Any:
        stub = self._channel.stream_stream(method)

        def handle(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
            call = self._begin(method, kind)
            yield from self._stream_back(call, context, stub(
                self._requests(call, requests), timeout=_timeout(context)))
        return handle

    def _stream_back(self, call: RecordedCall, context: grpc.ServicerContext,
                     upstream: Any) -> Iterator[bytes]:
        context.add_callback(upstream.cancel)  # the client went away: so does the upstream call
        with self._relay(call, context):
            for response in upstream:
                self._keep(call, "resp", response)
                yield response

    @contextlib.contextmanager
    def _relay(self, call: RecordedCall, context: grpc.ServicerContext) -> Iterator[None]:
        """Record how the call ended, and hand an upstream error back unchanged."""
        try:
            yield
        except grpc.RpcError as error:
            call.code = error.code().name  # type: ignore[attr-defined]
            self._save(call)
            context.abort(error.code(), error.details() or "")  # type: ignore[attr-defined]
        except GeneratorExit:
            call.code = "CANCELLED"
            self._save(call)
            raise
        else:
            call.code = "OK"
            self._save(call)

    @staticmethod
    def _stem(call: RecordedCall) -> str:
        return f"{call.seq:05d}-{call.route}-{call.method.strip('/').replace('/', '.')}"

    def _save(self, call: RecordedCall) -> None:
        """Index a finished call (its messages were written as they passed)."""
        if self.record_dir is None:
            return
        line = {"seq": call.seq, "route": call.route, "method": call.method, "kind": call.kind,
                "code": call.code, "requests": len(call.requests),
                "responses": len(call.responses), "files": self._stem(call) + "-*.bin"}
        with self._lock, (self.record_dir / "index.jsonl").open("a") as index:
            index.write(json.dumps(line) + "\n")
