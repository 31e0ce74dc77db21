"""TF Serving's ModelServer: PredictionService, ModelService and gRPC health
(docs/wire-facts.md, "TF Serving gRPC API"). Every Serving method is unary; Health/Watch
streams its answers. The distributed runtime's methods are another family (cluster.py)."""

from __future__ import annotations

from proxy.families import Access, Family, Kind, Method, family
from proxy.inspect import serving

_PREDICTION = "/tensorflow.serving.PredictionService/"
_MODEL = "/tensorflow.serving.ModelService/"
_HEALTH = "/grpc.health.v1.Health/"


SERVING: Family = family("serving", (
    Method(_PREDICTION + "Predict", Access.DATA, Kind.UNARY_UNARY, serving.predict),
    Method(_PREDICTION + "Classify", Access.DATA, Kind.UNARY_UNARY, serving.classify),
    Method(_PREDICTION + "Regress", Access.DATA, Kind.UNARY_UNARY, serving.regress),
    Method(_PREDICTION + "MultiInference", Access.DATA, Kind.UNARY_UNARY,
           serving.multi_inference),
    Method(_PREDICTION + "GetModelMetadata", Access.METADATA, Kind.UNARY_UNARY,
           serving.metadata),
    Method(_MODEL + "GetModelStatus", Access.METADATA, Kind.UNARY_UNARY, serving.status),
    Method(_MODEL + "HandleReloadConfigRequest", Access.ADMIN, Kind.UNARY_UNARY,
           serving.reload),
    Method(_HEALTH + "Check", Access.INFRA, Kind.UNARY_UNARY, serving.health),
    Method(_HEALTH + "Watch", Access.INFRA, Kind.UNARY_STREAM, serving.health),
), always_denied=(
    # SessionService runs arbitrary graph tensors past signatures (docs/wire-facts.md).
    "/tensorflow.serving.SessionService/",
))
