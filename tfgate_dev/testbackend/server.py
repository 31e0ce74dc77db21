"""The backend process: gRPC wiring, request recording, test hooks and the CLI.

Handlers are registered per method with a request deserializer that keeps the exact bytes
received next to the parsed message, so the recorder can log them before anything else runs.
Every call then goes: record -> hooks (sleep, fail) -> servicer -> success metadata.
See the package docstring (``tfgate_dev/testbackend/__init__.py``) for the CLI and the hooks.

This module imports TensorFlow: run it only as ``python -m tfgate_dev.testbackend``.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any, NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    predict_pb2,
    regression_pb2,
)

from .models import build_models
from .services import ModelService, PredictionService, Registry, ServingError

MIB = 1 << 20
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * MIB),
    ("grpc.max_send_message_length", 64 * MIB),
    ("grpc.so_reuseport", 0),
]
SUCCESS_INITIAL = (("x-backend-initial", "1"),)
SUCCESS_TRAILING = (("x-backend", "tfgate-testbackend"),)
FAIL_TRAILING = (("x-test-trailer", "trailer-value"), ("x-test-trailer-bin", b"\x00\x01binary"))
HEALTH_SERVING = b"\x08\x01"  # grpc.health.v1.HealthCheckResponse{status: SERVING}

PREDICTION_METHODS = {
    "Classify": classification_pb2.ClassificationRequest,
    "Regress": regression_pb2.RegressionRequest,
    "Predict": predict_pb2.PredictRequest,
    "MultiInference": inference_pb2.MultiInferenceRequest,
    "GetModelMetadata": get_model_metadata_pb2.GetModelMetadataRequest,
}
MODEL_METHODS = {
    "GetModelStatus": get_model_status_pb2.GetModelStatusRequest,
    "HandleReloadConfigRequest": model_management_pb2.ReloadConfigRequest,
}


class Raw(NamedTuple):
    """What a handler receives: the bytes as received, and the parsed message (None if bad)."""

    data: bytes
    message: Any


def raw_parser(message_class: Any = None) -> Callable[[bytes], Raw]:
    def parse(data: bytes) -> Raw:
        if message_class is None:
            return Raw(data, data)
        try:
            return Raw(data, message_class.FromString(data))
        except Exception:  # noqa: BLE001 - undecodable: recorded, then answered INTERNAL
            return Raw(data, None)

    return parse


def _serialize(message: Any) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


class Recorder:
    """Appends one JSON line per received request to a file, flushed before the call runs."""

    def __init__(self, path: str | None) -> None:
        self._file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()

    def record(self, method: str, data: bytes, context: grpc.ServicerContext) -> None:
        if self._file is None:
            return
        metadata = [
            [k, base64.b64encode(v).decode() if isinstance(v, bytes) else v]
            for k, v in context.invocation_metadata()
        ]
        remaining = context.time_remaining()
        if remaining is not None and (not math.isfinite(remaining) or remaining > 1e9):
            remaining = None  # no deadline
        line = json.dumps({
            "method": method,
            "request_b64": base64.b64encode(data).decode(),
            "metadata": metadata,
            "time_remaining": remaining,
            "peer": context.peer(),
        }, separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _header(context: grpc.ServicerContext, key: str) -> Any:
    for k, v in context.invocation_metadata():
        if k == key:
            return v
    return None


def _int_header(context: grpc.ServicerContext, key: str, default: int) -> int:
    value = _header(context, key)
    try:
        return default if value is None else int(value)
    except ValueError:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad {key}: {value!r}")


def _sleep(context: grpc.ServicerContext, seconds: float) -> None:
    """Sleep, but end early (CANCELLED) as soon as the call is no longer active."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if not context.is_active():
            print("testbackend: call ended while sleeping", file=sys.stderr, flush=True)
            context.abort(grpc.StatusCode.CANCELLED, "call ended while sleeping")
        time.sleep(min(left, 0.01))


def apply_hooks(context: grpc.ServicerContext) -> None:
    """``x-test-sleep-ms`` then ``x-test-fail`` (see the package docstring)."""
    sleep_ms = _int_header(context, "x-test-sleep-ms", 0)
    if sleep_ms > 0:
        _sleep(context, sleep_ms / 1000)
    fail = _header(context, "x-test-fail")
    if fail:
        code = grpc.StatusCode.__members__.get(str(fail).upper())
        if code is None or code is grpc.StatusCode.OK:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown x-test-fail code: {fail}")
        context.set_trailing_metadata(FAIL_TRAILING)
        context.abort(code, "test failure requested")


def _succeed(context: grpc.ServicerContext) -> None:
    context.send_initial_metadata(SUCCESS_INITIAL)
    context.set_trailing_metadata(SUCCESS_TRAILING)


def _begin(recorder: Recorder, method: str, raw: Raw, context: grpc.ServicerContext) -> None:
    recorder.record(method, raw.data, context)
    if raw.message is None:
        context.abort(grpc.StatusCode.INTERNAL, "Exception deserializing request!")
    apply_hooks(context)


def _unary(recorder: Recorder, method: str, request_class: Any,
           behavior: Callable[[Any, grpc.ServicerContext], Any]) -> grpc.RpcMethodHandler:
    def handle(raw: Raw, context: grpc.ServicerContext) -> Any:
        _begin(recorder, method, raw, context)
        try:
            response = behavior(raw.message, context)
        except ServingError as exc:
            context.abort(exc.code, exc.details)
        _succeed(context)
        return response

    return grpc.unary_unary_rpc_method_handler(
        handle, request_deserializer=raw_parser(request_class), response_serializer=_serialize)


def _health_handler(recorder: Recorder) -> grpc.GenericRpcHandler:
    """grpc.health.v1.Health by hand (grpcio-health-checking is not a dependency)."""
    check_path, watch_path = "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"

    def check(raw: Raw, context: grpc.ServicerContext) -> bytes:
        _begin(recorder, check_path, raw, context)
        _succeed(context)
        return HEALTH_SERVING

    def watch(raw: Raw, context: grpc.ServicerContext) -> Iterator[bytes]:
        _begin(recorder, watch_path, raw, context)
        count = _int_header(context, "x-test-watch-count", 3)
        interval = _int_header(context, "x-test-watch-interval-ms", 0) / 1000
        context.send_initial_metadata(SUCCESS_INITIAL)
        for i in range(count):
            if i and interval:
                _sleep(context, interval)
            yield HEALTH_SERVING
        context.set_trailing_metadata(SUCCESS_TRAILING)

    return grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(
            check, request_deserializer=raw_parser(), response_serializer=_serialize),
        "Watch": grpc.unary_stream_rpc_method_handler(
            watch, request_deserializer=raw_parser(), response_serializer=_serialize),
    })


class UnknownMethods(grpc.GenericRpcHandler):
    """Any other path: record it (with its first message, if any) and answer UNIMPLEMENTED."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method

        def handle(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
            try:
                first = next(requests, b"")
            except Exception:  # noqa: BLE001 - the client went away before sending anything
                first = b""
            self.recorder.record(method, first, context)
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
            yield b""  # unreachable; makes this a generator

        return grpc.stream_stream_rpc_method_handler(handle)


def generic_handlers(models: dict, recorder: Recorder) -> list[grpc.GenericRpcHandler]:
    registry = Registry(models)
    services = [
        ("tensorflow.serving.PredictionService", PredictionService(registry), PREDICTION_METHODS),
        ("tensorflow.serving.ModelService", ModelService(registry), MODEL_METHODS),
    ]
    handlers: list[grpc.GenericRpcHandler] = []
    for service_name, servicer, methods in services:
        handlers.append(grpc.method_handlers_generic_handler(service_name, {
            name: _unary(recorder, f"/{service_name}/{name}", request_class,
                         getattr(servicer, name))
            for name, request_class in methods.items()
        }))
    return [*handlers, _health_handler(recorder), UnknownMethods(recorder)]


def bound_address(listen: str, port: int) -> str:
    if listen.startswith("unix"):
        return listen
    return f"{listen.rsplit(':', 1)[0]}:{port}"


def _stop_on_eof(stop: threading.Event) -> None:
    # os.read, not sys.stdin: a daemon thread blocked in a buffered read aborts shutdown.
    while os.read(0, 4096):
        pass
    stop.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfgate_dev.testbackend",
                                     description="TensorFlow Serving stand-in for tfgate tests")
    parser.add_argument("--listen", required=True,
                        help="host:port (port 0 picks a free port) or unix:/path")
    parser.add_argument("--record", help="append one JSON line per received request here")
    parser.add_argument("--ready-file", help="write the bound address here once serving")
    parser.add_argument("--exit-on-stdin-eof", action="store_true",
                        help="stop when stdin closes (start_backend uses this)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="tfgate-testbackend-") as tmp:
        models = build_models(Path(tmp))  # fully loaded: the files go right away
    recorder = Recorder(args.record)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers(generic_handlers(models, recorder))
    try:
        port = server.add_insecure_port(args.listen)
    except RuntimeError as exc:
        print(f"testbackend: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 2
    address = bound_address(args.listen, port)
    server.start()

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.exit_on_stdin_eof:
        threading.Thread(target=_stop_on_eof, args=(stop,), daemon=True).start()
    if args.ready_file:
        tmp_file = f"{args.ready_file}.tmp"
        Path(tmp_file).write_text(address)
        os.replace(tmp_file, args.ready_file)
    print(f"READY {address}", flush=True)

    while not stop.wait(0.5):
        pass
    server.stop(grace=2).wait()
    recorder.close()
    return 0
