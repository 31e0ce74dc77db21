"""Tests for tests/recording_forwarder.py: the four call kinds pass byte for byte, statuses
come back unchanged, and every message is recorded in memory and on disk."""

from __future__ import annotations

import json
import pathlib
import queue
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from tests.recording_forwarder import RecordingForwarder

KINDS = {"/t.Echo/UU": "unary_unary", "/t.Echo/US": "unary_stream",
         "/t.Echo/SU": "stream_unary", "/t.Echo/SS": "stream_stream"}


class Echo(grpc.GenericRpcHandler):
    """A backend of all four kinds over raw bytes; a request b"deny" is refused."""

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        kind = KINDS.get(details.method)
        if kind is None:
            return None
        return getattr(grpc, f"{kind}_rpc_method_handler")(getattr(self, kind))

    @staticmethod
    def _check(message: bytes, context: grpc.ServicerContext) -> bytes:
        if message == b"deny":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "no")
        return b"echo:" + message

    def unary_unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        return self._check(request, context)

    def unary_stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for i in range(3):
            yield self._check(request, context) + bytes([i])

    def stream_unary(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        return self._check(b"+".join(requests), context)

    def stream_stream(self, requests: Iterator[bytes],
                      context: grpc.ServicerContext) -> Iterator[bytes]:
        for request in requests:
            yield self._check(request, context)


@pytest.fixture
def forwarded(tmp_path: pathlib.Path) -> Iterator[tuple[grpc.Channel, RecordingForwarder]]:
    backend = grpc.server(futures.ThreadPoolExecutor(4), handlers=[Echo()])
    backend.add_insecure_port(f"unix:{tmp_path}/backend.sock")
    backend.start()
    forwarder = RecordingForwarder(f"unix:{tmp_path}/fwd.sock", f"unix:{tmp_path}/backend.sock",
                                   kinds=KINDS, route="a-b", record_dir=tmp_path / "rec").start()
    channel = grpc.insecure_channel(f"unix:{tmp_path}/fwd.sock")
    yield channel, forwarder
    channel.close()
    forwarder.stop()
    backend.stop(0)


class TestRecordingForwarder:
    def test_four_kinds(self, forwarded: tuple[grpc.Channel, RecordingForwarder]) -> None:
        """Each kind is relayed with its own semantics and recorded message by message."""
        channel, forwarder = forwarded
        assert channel.unary_unary("/t.Echo/UU")(b"x", timeout=10) == b"echo:x"
        assert list(channel.unary_stream("/t.Echo/US")(b"y", timeout=10)) == [
            b"echo:y\x00", b"echo:y\x01", b"echo:y\x02"]
        assert channel.stream_unary("/t.Echo/SU")(iter([b"1", b"2"]), timeout=10) == b"echo:1+2"
        assert list(channel.stream_stream("/t.Echo/SS")(iter([b"a", b"b"]), timeout=10)) == [
            b"echo:a", b"echo:b"]
        calls = forwarder.calls()
        assert [(c.method, c.kind, c.requests, len(c.responses), c.code) for c in calls] == [
            ("/t.Echo/UU", "unary_unary", [b"x"], 1, "OK"),
            ("/t.Echo/US", "unary_stream", [b"y"], 3, "OK"),
            ("/t.Echo/SU", "stream_unary", [b"1", b"2"], 1, "OK"),
            ("/t.Echo/SS", "stream_stream", [b"a", b"b"], 2, "OK")]

    def test_status_comes_back(self, forwarded: tuple[grpc.Channel, RecordingForwarder]) -> None:
        """An upstream refusal reaches the client with its code, and is recorded."""
        channel, forwarder = forwarded
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/t.Echo/UU")(b"deny", timeout=10)
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as streamed:
            list(channel.stream_stream("/t.Echo/SS")(iter([b"ok", b"deny"]), timeout=10))
        assert streamed.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert [c.code for c in forwarder.calls()] == ["PERMISSION_DENIED", "PERMISSION_DENIED"]

    def test_unknown_kind_relayed_as_stream(
            self, forwarded: tuple[grpc.Channel, RecordingForwarder]) -> None:
        """A method missing from `kinds` still reaches the backend (as a stream)."""
        channel, forwarder = forwarded
        forwarder.kinds = {}
        assert channel.unary_unary("/t.Echo/UU")(b"z", timeout=10) == b"echo:z"
        assert forwarder.calls()[-1].kind == "stream_stream"

    def test_clear_keeps_open_streams(
            self, forwarded: tuple[grpc.Channel, RecordingForwarder]) -> None:
        """After clear(), an open stream shows only the messages sent since."""
        channel, forwarder = forwarded
        sent: queue.Queue[bytes | None] = queue.Queue()
        sent.put(b"first")
        responses = channel.stream_stream("/t.Echo/SS")(iter(sent.get, None), timeout=10)
        assert next(responses) == b"echo:first"
        forwarder.clear()
        sent.put(b"second")
        assert next(responses) == b"echo:second"
        (call,) = forwarder.calls()
        assert call.requests == [b"second"] and call.code == ""
        sent.put(None)
        assert list(responses) == []

    def test_records_on_disk(self, forwarded: tuple[grpc.Channel, RecordingForwarder],
                             tmp_path: pathlib.Path) -> None:
        channel, _ = forwarded
        channel.unary_unary("/t.Echo/UU")(b"disk", timeout=10)
        (line,) = [json.loads(x) for x in (tmp_path / "rec" / "index.jsonl").read_text().splitlines()]
        assert (line["method"], line["kind"], line["code"], line["requests"]) == (
            "/t.Echo/UU", "unary_unary", "OK", 1)
        (request,) = (tmp_path / "rec").glob("*-req0000.bin")
        assert request.read_bytes() == b"disk"
