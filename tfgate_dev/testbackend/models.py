"""The test models: real TensorFlow SavedModels, built and loaded at backend start-up.

Every model is a ``tf.Module`` whose ``tf.function`` signatures are exported with
``tf.saved_model.save`` into ``<root>/<model>/<version>/`` (the ModelServer base-path layout),
then loaded back with ``tf.saved_model.load``. TF 2 export marks every signature
``tensorflow/serving/predict``; the regress and classify signatures get their method names by
rewriting ``saved_model.pb`` before loading. The SignatureDefs served by GetModelMetadata are
read from that same file, so they include ``__saved_model_init_op`` as ModelServer's do.

This module imports TensorFlow: only the backend subprocess may import it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"

_X = tf.TensorSpec([None], tf.float32, name="x")
_EXAMPLES = tf.TensorSpec([None], tf.string, name="inputs")


def _parse_x(serialized: tf.Tensor) -> tf.Tensor:
    """Float feature "x" of each serialized tf.Example (0 when absent), shape [None]."""
    spec = {"x": tf.io.FixedLenFeature([], tf.float32, default_value=0.0)}
    return tf.io.parse_example(serialized, spec)["x"]


class HalfPlusN(tf.Module):
    """``half_plus_two``: serving_default is 0.5*x + offset (2 in version 1, 3 in version 2)."""

    def __init__(self, offset: float) -> None:
        super().__init__()
        self.offset = offset

    @tf.function(input_signature=[_X])
    def serving_default(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": 0.5 * x + self.offset}

    @tf.function(input_signature=[_X])
    def times_three(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": 3.0 * x}

    @tf.function(input_signature=[_EXAMPLES])
    def regress_x(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": 0.5 * _parse_x(inputs) + 2.0}

    @tf.function(input_signature=[_EXAMPLES])
    def classify_x(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        pos = tf.sigmoid(_parse_x(inputs))
        rows = tf.stack([tf.shape(pos)[0], 1])
        return {
            "scores": tf.stack([1.0 - pos, pos], axis=1),
            "classes": tf.tile(tf.constant([["neg", "pos"]]), rows),
        }


class PlusOne(tf.Module):
    """``other_model``: serving_default is x + 1."""

    @tf.function(input_signature=[_X])
    def serving_default(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": x + 1.0}


@dataclass
class Servable:
    """One loaded model version."""

    name: str
    version: int
    functions: dict[str, Any]  # signature name -> concrete function (kwargs in, dict out)
    signature_defs: get_model_metadata_pb2.SignatureDefMap
    loaded: Any = None  # keeps the loaded object (and its functions) alive


@dataclass
class Model:
    name: str
    versions: dict[int, Servable] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)

    @property
    def latest(self) -> Servable:
        return self.versions[max(self.versions)]


def _export(module: tf.Module, path: Path, methods: dict[str, str]) -> None:
    """Save every tf.function of ``methods`` as a signature, then set their method names."""
    signatures = {name: getattr(module, name) for name in methods}
    tf.saved_model.save(module, str(path), signatures=signatures)
    pb_path = path / "saved_model.pb"
    saved = saved_model_pb2.SavedModel.FromString(pb_path.read_bytes())
    for name, method in methods.items():
        saved.meta_graphs[0].signature_def[name].method_name = method
    pb_path.write_bytes(saved.SerializeToString())


def _load(name: str, version: int, path: Path) -> Servable:
    saved = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    defs = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in saved.meta_graphs[0].signature_def.items():
        defs.signature_def[key].CopyFrom(sig)
    loaded = tf.saved_model.load(str(path))
    return Servable(name, version, dict(loaded.signatures), defs, loaded)


HALF_PLUS_N_METHODS = {
    "serving_default": PREDICT,
    "times_three": PREDICT,
    "regress_x": REGRESS,
    "classify_x": CLASSIFY,
}


def build_models(root: Path) -> dict[str, Model]:
    """Export and load every test model under ``root``; the files are not needed afterwards."""
    plan = [
        ("half_plus_two", 1, HalfPlusN(2.0), HALF_PLUS_N_METHODS),
        ("half_plus_two", 2, HalfPlusN(3.0), HALF_PLUS_N_METHODS),
        ("other_model", 1, PlusOne(), {"serving_default": PREDICT}),
    ]
    models: dict[str, Model] = {}
    for name, version, module, methods in plan:
        path = root / name / str(version)
        _export(module, path, methods)
        models.setdefault(name, Model(name)).versions[version] = _load(name, version, path)
    models["half_plus_two"].labels = {"stable": 1, "canary": 2}
    return models
