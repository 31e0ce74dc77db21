"""A raw-bytes gRPC upstream for forwarding tests that need no TensorFlow: it records
every message it receives (so a test can prove a refused call never arrived) and echoes."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc

PREDICT = "/tensorflow.serving.PredictionService/Predict"
CLIENT_STREAM = "/tfgate.test.Echo/ClientStream"
BIDI = "/tfgate.test.Echo/Bidi"


class RawBackend:
    """A raw-bytes gRPC server that records what it receives and echoes it back."""

    def __init__(self, address: str = "127.0.0.1:0", credentials=None) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.metadata: list[dict[str, str | bytes]] = []  # per unary call
        self.metadata_items: list[tuple[tuple[str, str | bytes], ...]] = []  # same, every entry
        self.cancelled = threading.Event()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.server = grpc.server(ThreadPoolExecutor(8))
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "tensorflow.serving.PredictionService",
            {"Predict": grpc.unary_unary_rpc_method_handler(self._unary)})])
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "tfgate.test.Echo",
            {"ClientStream": grpc.stream_unary_rpc_method_handler(self._client_stream),
             "Bidi": grpc.stream_stream_rpc_method_handler(self._bidi)})])
        if credentials is None:
            port = self.server.add_insecure_port(address)
        else:
            port = self.server.add_secure_port(address, credentials)
        self.address = address if address.startswith("unix:") else f"127.0.0.1:{port}"
        self.server.start()

    def _unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.received.append((PREDICT, request))
        items = tuple(context.invocation_metadata())
        self.metadata_items.append(items)
        metadata = dict(items)
        self.metadata.append(metadata)
        if "x-block" in metadata:
            context.add_callback(self.cancelled.set)
            self.entered.set()
            self.release.wait(10)
        return b"echo:" + request

    def _client_stream(self, requests, context) -> bytes:
        messages = []
        for message in requests:
            self.received.append((CLIENT_STREAM, message))
            messages.append(message)
        return b"|".join(messages)

    def _bidi(self, requests, context):
        for message in requests:
            self.received.append((BIDI, message))
            yield b"echo:" + message

    def stop(self) -> None:
        self.release.set()
        self.server.stop(0)
