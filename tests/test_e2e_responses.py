"""Responses that would tell a caller what it may not see are filtered, checked with the
real tensorflow-serving-api client against real SavedModels (half_plus_two has versions
1 and 2 and the signatures serving_default, times_three, regress_x, classify_x)."""

from __future__ import annotations

import grpc
import pytest

from tests.conftest import TEAM_B, base_config, running_proxy

pytestmark = pytest.mark.tf
tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

ALL_SIGNATURES = {"serving_default", "times_three", "regress_x", "classify_x"}


@pytest.fixture(scope="module")
def proxy(pki, signing, backend):
    config = base_config(pki, signing, backend.address)
    config["policy"]["rules"] += [
        # team B: metadata and status of half_plus_two, but only version 1 and only
        # serving_default to call; no Classify/Regress at all.
        {"name": "team-b-read", "principals": {"spiffe": [TEAM_B]},
         "methods": ["GetModelMetadata", "GetModelStatus"], "models": ["half_plus_two"],
         "versions": [1, "latest"]},
        {"name": "team-b-predict", "principals": {"spiffe": [TEAM_B]},
         "methods": ["Predict"], "models": ["half_plus_two"], "versions": [1, "latest"],
         "signatures": ["serving_default"]},
        # ops: everything (no filtering expected)
        {"name": "ops-all", "principals": {"spiffe": ["spiffe://tfgate.test/ops/**"]},
         "methods": ["Predict", "Classify", "Regress", "GetModelMetadata"],
         "models": ["*"]},
    ]
    with running_proxy(config) as server:
        yield server


def signatures(pki, proxy, client, version=None) -> set[str]:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "half_plus_two"
    if version is not None:
        request.model_spec.version.value = version
    stub = prediction_service_pb2_grpc.PredictionServiceStub(pki.channel(proxy.address, client))
    response = stub.GetModelMetadata(request, timeout=10)
    defs = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(defs)
    return set(defs.signature_def)


def versions(pki, proxy, client, **spec) -> list[int]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "half_plus_two"
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    stub = model_service_pb2_grpc.ModelServiceStub(pki.channel(proxy.address, client))
    return sorted(s.version for s in stub.GetModelStatus(request, timeout=10).model_version_status)


class TestMetadata:
    def test_only_granted_signatures_are_listed(self, pki, proxy, backend):
        """Team A may call serving_default, regress_x and classify_x, not times_three:
        the metadata lists exactly those; the server itself listed all four."""
        assert signatures(pki, proxy, pki.alice) == ALL_SIGNATURES - {"times_three"}

    def test_signature_must_be_granted_for_a_data_method(self, pki, proxy, backend):
        """Team B may read metadata but call only serving_default (Predict)."""
        assert signatures(pki, proxy, pki.bob) == {"serving_default"}

    def test_unfiltered_when_everything_is_granted(self, pki, proxy, backend):
        """A caller granted every signature sees the server's answer, byte for byte
        (ModelServer also lists `__saved_model_init_op`, which only `*` grants)."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = "half_plus_two"
        direct = prediction_service_pb2_grpc.PredictionServiceStub(
            grpc.insecure_channel(backend.address)).GetModelMetadata(request, timeout=10)
        through = prediction_service_pb2_grpc.PredictionServiceStub(
            pki.channel(proxy.address, pki.ops)).GetModelMetadata(request, timeout=10)
        assert through.SerializeToString() == direct.SerializeToString()
        assert signatures(pki, proxy, pki.ops) >= ALL_SIGNATURES


class TestStatus:
    def test_only_granted_versions_without_a_version(self, pki, proxy, backend):
        """Without a version the server reports every version; team B is granted
        version 1 (and latest, which is 2): both stay; team A is granted 1 and 2."""
        assert versions(pki, proxy, pki.alice) == [1, 2]
        assert versions(pki, proxy, pki.bob) == [1, 2]

    def test_latest_alone_reveals_only_the_highest(self, pki, signing, backend):
        """A rule granting only `latest` reveals the highest version, not the others."""
        config = base_config(pki, signing, backend.address)
        config["policy"]["rules"] = [
            {"name": "latest-only", "principals": {"spiffe": [TEAM_B]},
             "methods": ["GetModelStatus"], "models": ["half_plus_two"], "versions": ["latest"]}]
        with running_proxy(config) as proxy:
            assert versions(pki, proxy, pki.bob) == [2]

    def test_explicit_version_is_answered_as_judged(self, pki, proxy, backend):
        assert versions(pki, proxy, pki.bob, version=1) == [1]
