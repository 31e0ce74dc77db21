"""TF Serving's ModelServer: PredictionService, ModelService and gRPC health
(docs/wire-facts.md, "TF Serving gRPC API"). Every Serving method is unary; Health/Watch
streams its answers. The distributed runtime's methods are another family (cluster.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from proxy import responses
from proxy.call import ModelTarget
from proxy.families import Access, Family, Grants, Kind, Method, family
from proxy.inspect import serving

_PREDICTION = "/tensorflow.serving.PredictionService/"
_MODEL = "/tensorflow.serving.ModelService/"
HEALTH_SERVICE = "/grpc.health.v1.Health/"  # answered by tfgate itself (health.py)


def visible_signatures(target: ModelTarget, grants: Grants) -> Callable[[str], bool]:
    """GetModelMetadata: whether the caller may call a signature on this model and
    version (shared with the REST front, proxy/rest/visible.py)."""
    return lambda name: grants.any_data(dataclasses.replace(target, signature=name))


def visible_versions(target: ModelTarget, grants: Grants
                     ) -> Callable[[int, bool], bool] | None:
    """GetModelStatus without a version: whether the caller may ask about a version
    (given whether it is the one "latest" serves, `responses.latest_version`). None for
    a request naming a version or label: the server answers that one version, already
    judged."""
    if target.version is not None or target.label is not None:
        return None
    def visible(version: int, is_latest: bool) -> bool:
        return grants.allows(_STATUS, dataclasses.replace(target, version=version)) or (
            is_latest and grants.allows(_STATUS, target))
    return visible


def _visible_signatures(data: bytes, target: ModelTarget, grants: Grants) -> bytes:
    return responses.metadata(data, visible_signatures(target, grants))


def _visible_versions(data: bytes, target: ModelTarget, grants: Grants) -> bytes:
    visible = visible_versions(target, grants)
    return data if visible is None else responses.status(data, visible)


_STATUS = _MODEL + "GetModelStatus"

SERVING: Family = family("serving", (
    Method(_PREDICTION + "Predict", Access.DATA, Kind.UNARY_UNARY, serving.predict),
    Method(_PREDICTION + "Classify", Access.DATA, Kind.UNARY_UNARY, serving.classify),
    Method(_PREDICTION + "Regress", Access.DATA, Kind.UNARY_UNARY, serving.regress),
    Method(_PREDICTION + "MultiInference", Access.DATA, Kind.UNARY_UNARY,
           serving.multi_inference),
    Method(_PREDICTION + "GetModelMetadata", Access.METADATA, Kind.UNARY_UNARY,
           serving.metadata, respond=_visible_signatures),
    Method(_STATUS, Access.METADATA, Kind.UNARY_UNARY, serving.status,
           respond=_visible_versions),
    Method(_MODEL + "HandleReloadConfigRequest", Access.ADMIN, Kind.UNARY_UNARY,
           serving.reload),
    Method(HEALTH_SERVICE + "Check", Access.INFRA, Kind.UNARY_UNARY, serving.health),
    Method(HEALTH_SERVICE + "Watch", Access.INFRA, Kind.UNARY_STREAM, serving.health),
), always_denied=(
    # SessionService runs arbitrary graph tensors past signatures (docs/wire-facts.md).
    "/tensorflow.serving.SessionService/",
))
