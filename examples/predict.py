#!/usr/bin/env python3
"""A minimal TF Serving Predict client for trying tfgate by hand.

    python examples/predict.py --address 127.0.0.1:8443 --ca certs/out/ca.pem \
        --cert certs/out/alice.pem --key certs/out/alice.key 1 2 3

Sends one PredictRequest (a float tensor `x` of the given values, or of `--shape` with
those values) with the real tensorflow-serving-api client over TLS, optionally with a
client certificate and a bearer token, and prints the outputs or the refusal.
Exit status: 0 answered, 1 refused or failed. Needs `make setup` (TensorFlow).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--address", required=True, help="tfgate's host:port")
    p.add_argument("--ca", type=pathlib.Path, required=True, help="CA that signed tfgate's cert")
    p.add_argument("--cert", type=pathlib.Path, help="client certificate (PEM)")
    p.add_argument("--key", type=pathlib.Path, help="client key (PEM)")
    p.add_argument("--token-file", type=pathlib.Path, help="file holding a bearer JWT")
    p.add_argument("--model", default="half_plus_two")
    p.add_argument("--signature", default="", help="empty means serving_default")
    p.add_argument("--version", type=int)
    p.add_argument("--input", default="x", help="input tensor name")
    p.add_argument("--shape", type=lambda s: [int(d) for d in s.split(",")],
                   help="declared shape, e.g. 2,3 (default: the number of values)")
    p.add_argument("values", type=float, nargs="+")
    return p.parse_args(argv)


def build_request(args: argparse.Namespace) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = args.model
    request.model_spec.signature_name = args.signature
    if args.version is not None:
        request.model_spec.version.value = args.version
    tensor = request.inputs[args.input]
    tensor.dtype = tf.float32.as_datatype_enum
    for size in args.shape or [len(args.values)]:
        tensor.tensor_shape.dim.add(size=size)
    tensor.float_val.extend(args.values)
    return request


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    read = (lambda p: p.read_bytes() if p else None)  # noqa: E731
    creds = grpc.ssl_channel_credentials(read(args.ca), read(args.key), read(args.cert))
    metadata = []
    if args.token_file:
        metadata.append(("authorization", "Bearer " + args.token_file.read_text().strip()))
    with grpc.secure_channel(args.address, creds) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(build_request(args), metadata=metadata, timeout=10)
        except grpc.RpcError as err:
            print(f"REFUSED {err.code().name}: {err.details()}")
            return 1
    for name, tensor in sorted(response.outputs.items()):
        print(f"{name} = {tf.make_ndarray(tensor).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
