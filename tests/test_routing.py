"""Tests for proxy.routing: the method table, refused paths, and rule method patterns."""

from __future__ import annotations

import grpc
import pytest

from proxy.errors import Reason, Reject
from proxy.inspect import serving
from proxy.routing import ALWAYS_DENIED, METHODS, Access, Kind, lookup, resolve_method_pattern

SERVING = "/tensorflow.serving.PredictionService/"
MODEL = "/tensorflow.serving.ModelService/"
RELOAD = MODEL + "HandleReloadConfigRequest"


class TestMethodTable:
    @pytest.mark.parametrize(("path", "access", "inspect"), [
        (SERVING + "Predict", Access.DATA, serving.predict),
        (SERVING + "Classify", Access.DATA, serving.classify),
        (SERVING + "Regress", Access.DATA, serving.regress),
        (SERVING + "MultiInference", Access.DATA, serving.multi_inference),
        (SERVING + "GetModelMetadata", Access.METADATA, serving.metadata),
        (MODEL + "GetModelStatus", Access.METADATA, serving.status),
        (RELOAD, Access.ADMIN, serving.reload),
        ("/grpc.health.v1.Health/Check", Access.INFRA, serving.health),
        ("/grpc.health.v1.Health/Watch", Access.INFRA, serving.health),
    ])
    def test_known_paths(self, path: str, access: Access, inspect: object) -> None:
        """Every TF Serving path (tf-protocols.md §1.1) is known with its access and parser."""
        method = lookup(path)
        assert method.path == path and method.access is access and method.inspect is inspect
        assert method.name == path.rsplit("/", 1)[1]
        assert method.addresses_model is (access in (Access.DATA, Access.METADATA))

    def test_kinds(self) -> None:
        """Serving RPCs are unary; Health/Watch is server-streaming."""
        serving_paths = [p for p in METHODS if p.startswith((SERVING, MODEL))]
        assert len(serving_paths) == 7
        assert {METHODS[p].kind for p in serving_paths} == {Kind.UNARY_UNARY}
        watch = lookup("/grpc.health.v1.Health/Watch").kind
        assert watch is Kind.UNARY_STREAM and watch.server_streams and not watch.client_streams
        assert Kind.STREAM_STREAM.client_streams and Kind.STREAM_UNARY.client_streams


class TestLookupRefusals:
    @pytest.mark.parametrize("path", [
        "/tensorflow.serving.predictionservice/predict",
        "/tensorflow.serving.PredictionService/predict",
        "/Tensorflow.serving.PredictionService/Predict",
        "/tensorflow.serving.PredictionService/Predict/",
        "tensorflow.serving.PredictionService/Predict",
        "/tensorflow.serving.PredictionService/Predict ",
        "/tensorflow.serving.PredictionService//Predict",
        "/tensorflow.serving.PredictionService/PredictStreamed",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "",
        "/",
    ])
    def test_unknown_unimplemented(self, path: str) -> None:
        """Paths are matched exactly and case-sensitively; anything else is UNIMPLEMENTED."""
        with pytest.raises(Reject) as info:
            lookup(path)
        assert info.value.code is grpc.StatusCode.UNIMPLEMENTED
        assert info.value.reason is Reason.UNKNOWN_METHOD

    @pytest.mark.parametrize("path", [
        "/tensorflow.ProfilerService/Profile", "/tensorflow.ProfilerService/Terminate",
        "/tensorflow.ProfilerService/Monitor", "/tensorflow.ProfilerService/GetSnapShot",
        "/tensorflow.ProfilerService/StartContinuousProfiling",
        "/tensorflow.ProfilerService/NotYetInvented",
        "/tensorflow.serving.SessionService/SessionRun",
        "/tensorflow.serving.SessionService/SessionMeta",
    ])
    def test_always_denied(self, path: str) -> None:
        """The profiler and SessionService are PERMISSION_DENIED, whatever their method."""
        with pytest.raises(Reject) as info:
            lookup(path)
        assert info.value.code is grpc.StatusCode.PERMISSION_DENIED
        assert info.value.reason is Reason.METHOD_ALWAYS_DENIED

    def test_always_denied_never_in_table(self) -> None:
        """No known method sits under an always-denied prefix."""
        assert not [p for p in METHODS if p.startswith(ALWAYS_DENIED)]


class TestResolveMethodPattern:
    @pytest.mark.parametrize(("pattern", "paths"), [
        ("Predict", {SERVING + "Predict"}),
        ("PredictionService/Predict", {SERVING + "Predict"}),
        ("serving.PredictionService/Predict", {SERVING + "Predict"}),
        (SERVING + "Predict", {SERVING + "Predict"}),
        ("HandleReloadConfigRequest", {RELOAD}),
        ("ModelService/HandleReloadConfigRequest", {RELOAD}),
        (RELOAD, {RELOAD}),
        ("/grpc.health.v1.Health/*", {"/grpc.health.v1.Health/Check",
                                      "/grpc.health.v1.Health/Watch"}),
        (MODEL + "*", {MODEL + "GetModelStatus"}),
        ("*/Get*", {SERVING + "GetModelMetadata", MODEL + "GetModelStatus"}),
    ])
    def test_expansion(self, pattern: str, paths: set[str]) -> None:
        """Names, Service/Method suffixes, paths and globs expand to known paths."""
        assert resolve_method_pattern(pattern) == paths

    def test_star_excludes_admin(self) -> None:
        """`*` covers every known method except the admin one."""
        granted = resolve_method_pattern("*")
        assert RELOAD not in granted
        assert granted == {p for p, m in METHODS.items() if m.access is not Access.ADMIN}
        assert SERVING + "Predict" in granted

    @pytest.mark.parametrize("pattern", [
        "predict", "Predict*", "ervice/Predict", "/tensorflow.serving.PredictionService/Nope",
        MODEL + "HandleReload*", MODEL + "HandleReloadConfigReques?",
        "/tensorflow.serving.ModelService/[H]andleReloadConfigRequest", "",
    ])
    def test_matches_nothing(self, pattern: str) -> None:
        """Typos, case changes and globs that could only reach the admin method are refused."""
        with pytest.raises(ValueError, match="matches no known method"):
            resolve_method_pattern(pattern)

    @pytest.mark.parametrize("pattern", [
        "/tensorflow.ProfilerService/*", "/tensorflow.ProfilerService/Profile",
        "SessionService/SessionRun", "/tensorflow.serving.SessionService/*", "*SessionService*",
    ])
    def test_always_denied_patterns(self, pattern: str) -> None:
        """Patterns naming the profiler or SessionService are refused outright."""
        with pytest.raises(ValueError, match="always denied"):
            resolve_method_pattern(pattern)
