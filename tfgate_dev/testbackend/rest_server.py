"""The backend's REST listener: ModelServer's routes, its JSON answers, and the recorder.

`RestApi.handle(method, target, headers, body)` does what ModelServer's
RestApiRequestDispatcher + HttpRestApiHandler do (see rest.py for the JSON side);
`serve_rest(...)` runs it on a ThreadingHTTPServer in a daemon thread. Answers are laid out
as ModelServer's (floats with WriteDecimal's digits, `{"error": ...}` with its statuses).
This module imports TensorFlow.
"""

from __future__ import annotations

import gzip
import http.server
import json
import math
import sys
import threading
import traceback
import urllib.parse
import zlib
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    regression_pb2,
)

from . import rest
from .services import ModelService, PredictionService, ServingError

MAX_BODY = 256 << 20


def write_decimal(value: float, single: bool) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = f"{value:g}"
    back = np.float32(float(text)) if single else float(text)
    if back != value:
        text = ("%.9g" if single else "%.17g") % value
    return text if ("." in text or "e" in text) else text + ".0"


class Raw(str):
    """Already-JSON text inside a value tree."""


def _leaf(value: Any, single: bool, as_b64: bool) -> Any:
    if isinstance(value, (np.floating, float)):
        return Raw(write_decimal(float(value), single))
    if isinstance(value, bytes):
        return {"b64": rest.base64.b64encode(value).decode()} if as_b64 else value.decode(
            "utf-8", "replace")
    return value.item() if isinstance(value, np.generic) else value


def _tree(array: np.ndarray, name: str, dtype: Any) -> Any:
    single, as_b64 = dtype == tf.float32, dtype == tf.string and name.endswith("_bytes")
    def walk(x: Any) -> Any:
        if isinstance(x, list):
            return [walk(y) for y in x]
        return _leaf(x, single, as_b64)
    return walk(array.tolist())


def dump(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(dump(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {dump(v)}" for k, v in value.items()) + "}"
    return json.dumps(value, ensure_ascii=False)


def predict_json(response: Any, row: bool) -> str:
    tensors = {name: (tf.make_ndarray(t), tf.dtypes.as_dtype(t.dtype))
               for name, t in response.outputs.items()}
    if row:
        sizes = {a.shape[0] if a.ndim else None for a, _ in tensors.values()}
        if None in sizes or len(sizes) != 1:
            raise rest._bad("outputs have no or inconsistent batch size")
        trees = {n: _tree(a, n, d) for n, (a, d) in tensors.items()}
        batch = sizes.pop()
        rows = [next(iter(trees.values()))[i] if len(trees) == 1 else
                {n: t[i] for n, t in trees.items()} for i in range(batch)]
        return dump({"predictions": rows})
    trees = {n: _tree(a, n, d) for n, (a, d) in tensors.items()}
    return dump({"outputs": next(iter(trees.values())) if len(trees) == 1 else trees})


class _Context:
    """What Recorder.record reads from a gRPC context, for a REST request."""

    def __init__(self, headers: list[tuple[str, str]], peer: str) -> None:
        self._headers, self._peer = headers, peer

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self._headers

    def time_remaining(self) -> None:
        return None

    def peer(self) -> str:
        return self._peer


class RestApi:
    def __init__(self, prediction: PredictionService, model: ModelService) -> None:
        self.prediction, self.model = prediction, model

    def handle(self, method: str, target: str, body: bytes) -> tuple[int, str]:
        try:
            return 200, self._dispatch(method, target, body)
        except ServingError as exc:
            return rest._HTTP.get(exc.code, 500), json.dumps({"error": exc.details}, indent=4)
        except Exception as exc:  # noqa: BLE001 - a bug here: say so, as a 500, and log it
            traceback.print_exc(file=sys.stderr)
            return 500, json.dumps({"error": f"testbackend: {type(exc).__name__}: {exc}"})

    def _dispatch(self, method: str, target: str, body: bytes) -> str:
        pattern = rest._POST if method == "POST" else rest._GET if method == "GET" else None
        match = pattern.fullmatch(target) if pattern else None
        if match is None:
            raise rest._bad(f"Malformed request: {method} {target}")
        name, version, label, suffix = match.groups()
        spec = {"name": urllib.parse.unquote(name or "")}
        if version:
            spec["version"] = str(int(version))
        if label:
            spec["version_label"] = urllib.parse.unquote(label)
        if method == "GET":
            if not spec["name"]:
                raise rest._bad("Missing model name in request.")
            return self._metadata(spec) if suffix == "metadata" else self._status(spec)
        if suffix not in ("predict", "classify", "regress"):
            raise rest._bad(f"Malformed request: {method} {target}")
        doc = rest.parse_body(body)
        signature = doc.get("signature_name", "")
        if not isinstance(signature, str):
            raise rest._bad("'signature_name' key must be a string value.")
        spec["signature_name"] = signature
        return getattr(self, "_" + suffix)(spec, doc)

    def _predict(self, spec: dict, doc: dict) -> str:
        servable = self.prediction.registry.servable(json_format.ParseDict(
            spec, model_pb2.ModelSpec()))
        sig = spec["signature_name"] or "serving_default"
        if sig not in servable.signature_defs.signature_def:
            raise rest._bad(f'Serving signature name: "{sig}" not found in signature def')
        request, row = rest.predict_request(doc, servable.signature_defs.signature_def[sig].inputs)
        json_format.ParseDict(spec, request.model_spec)
        return predict_json(self.prediction.Predict(request, None), row)

    def _examples(self, cls: Any, spec: dict, doc: dict) -> Any:
        request = cls()
        json_format.ParseDict(spec, request.model_spec)
        request.input.CopyFrom(rest.examples_input(doc))
        return request

    def _classify(self, spec: dict, doc: dict) -> str:
        request = self._examples(classification_pb2.ClassificationRequest, spec, doc)
        result = self.prediction.Classify(request, None).result
        rows = [[[Raw(json.dumps(c.label)), Raw(write_decimal(c.score, True))]
                 for c in row.classes] for row in result.classifications]
        return dump({"results": rows})

    def _regress(self, spec: dict, doc: dict) -> str:
        request = self._examples(regression_pb2.RegressionRequest, spec, doc)
        result = self.prediction.Regress(request, None).result
        return dump({"results": [Raw(write_decimal(r.value, True)) for r in result.regressions]})

    def _status(self, spec: dict) -> str:
        request = get_model_status_pb2.GetModelStatusRequest()
        json_format.ParseDict({"model_spec": spec}, request)
        response = self.model.GetModelStatus(request, None)
        return json_format.MessageToJson(response, always_print_fields_with_no_presence=True,
                                         indent=1)

    def _metadata(self, spec: dict) -> str:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        json_format.ParseDict({"model_spec": spec}, request)
        response = self.prediction.GetModelMetadata(request, None)
        defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(defs)
        opts = {"always_print_fields_with_no_presence": True, "preserving_proto_field_name": True}
        return json.dumps({"model_spec": json_format.MessageToDict(response.model_spec, **opts),
                           "metadata": {"signature_def": json_format.MessageToDict(defs, **opts)}},
                          indent=1)


def _handler(api: RestApi, recorder: Any) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self.send_error(413)
                return
            body = self.rfile.read(length) if length else b""
            headers = [(k.lower(), v) for k, v in self.headers.items()]
            recorder.record(f"REST {self.command} {self.path}", body,
                            _Context(headers, f"ipv4:{self.client_address[0]}"))
            if "gzip" in (self.headers.get("Content-Encoding") or ""):
                try:
                    body = gzip.decompress(body)
                except (OSError, EOFError, zlib.error):
                    body = b""
            status, text = api.handle(self.command, self.path, body)
            data = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve

    return Handler


def serve_rest(listen: str, models: dict, recorder: Any) -> tuple[http.server.HTTPServer, str]:
    """Start the REST listener on `listen` (host:port) in a daemon thread."""
    from .services import Registry

    registry = Registry(models)
    api = RestApi(PredictionService(registry), ModelService(registry))
    host, port = listen.rsplit(":", 1)
    server = http.server.ThreadingHTTPServer((host, int(port)), _handler(api, recorder))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="testbackend-rest", daemon=True).start()
    return server, f"{host}:{server.server_address[1]}"
