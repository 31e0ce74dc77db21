"""Tests for proxy.routing: the method table built from families, refused paths, rule
method patterns, and the choice of upstream."""

from __future__ import annotations

import pytest

from proxy.call import Facts, ModelTarget
from proxy.config import validate_config
from proxy.errors import Code, Reason, Reject
from proxy.families import Access, Kind, Method, family
from proxy.families.serving import SERVING as SERVING_FAMILY
from proxy.inspect import serving
from proxy.routing import MethodTable, UpstreamRouter

TABLE = MethodTable([SERVING_FAMILY])
METHODS = TABLE.methods
ALWAYS_DENIED = TABLE.always_denied
lookup = TABLE.lookup
resolve_method_pattern = TABLE.resolve

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
        """Every TF Serving path (docs/wire-facts.md) is known with its access and parser."""
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
        assert info.value.code is Code.UNIMPLEMENTED
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
        assert info.value.code is Code.PERMISSION_DENIED
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
        ("/*/Get*", {SERVING + "GetModelMetadata", MODEL + "GetModelStatus"}),
    ])
    def test_expansion(self, pattern: str, paths: set[str]) -> None:
        """Names, Service/Method suffixes, paths and globs expand to known paths."""
        assert resolve_method_pattern(pattern) == paths

    def test_star_excludes_admin(self) -> None:
        """`**` covers every known method except the admin one; `*` alone, which cannot
        cross the `/` of a path, matches none and is refused."""
        with pytest.raises(ValueError, match="matches no known method"):
            resolve_method_pattern("*")
        granted = resolve_method_pattern("**")
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


class TestFamilies:
    def test_table_holds_only_enabled_families(self) -> None:
        """A family's methods exist only in tables built with it; its always-denied
        prefixes join the global ones."""
        extra = family("extra", (Method("/x.Y/Z", Access.INFRA, Kind.UNARY_UNARY,
                                         lambda data: Facts()),), always_denied=("/x.Bad/",))
        assert "/x.Y/Z" not in TABLE.methods
        table = MethodTable([SERVING_FAMILY, extra])
        assert table.lookup("/x.Y/Z").family == "extra"
        assert table.resolve("Z") == {"/x.Y/Z"}
        with pytest.raises(Reject) as info:
            table.lookup("/x.Bad/Anything")
        assert info.value.reason is Reason.METHOD_ALWAYS_DENIED

    def test_config_enables_families_by_upstream_kind(self, tmp_path) -> None:
        """The table of a config is built from the kinds of its upstreams."""
        cfg = validate_config({"listen": {"address": "127.0.0.1:0", "plaintext": True},
                               "upstreams": {"a": {"address": "127.0.0.1:1"}}})
        assert MethodTable.for_config(cfg).methods == METHODS


class TestClusterFamily:
    """`kind: cluster` brings the distributed runtime's methods, StreamingEnqueue among
    them (no longer a Serving method); the profiler stays refused beside it."""

    def table(self) -> MethodTable:
        cfg = validate_config({"listen": {"address": "127.0.0.1:0", "plaintext": True},
                               "upstreams": {"a": {"address": "127.0.0.1:1"},
                                             "w": {"address": "127.0.0.1:2", "kind": "cluster"}}})
        return MethodTable.for_config(cfg)

    def test_every_inspected_method_with_its_kind(self) -> None:
        from proxy.inspect.distributed import METHODS as CLUSTER_METHODS

        table = self.table()
        for path, (kind, _) in CLUSTER_METHODS.items():
            method = table.lookup(path)
            assert (method.family, method.kind.value) == ("cluster", kind)
            assert not method.addresses_model
        stream = table.lookup("/tensorflow.eager.EagerService/StreamingEnqueue")
        assert stream.kind is Kind.STREAM_STREAM
        assert "/tensorflow.eager.EagerService/StreamingEnqueue" not in TABLE.methods

    def test_server_wide_methods_must_be_named(self) -> None:
        table = self.table()
        assert "/tensorflow.MasterService/Reset" not in table.resolve("/tensorflow.MasterService/*")
        assert table.resolve("Reset") == {"/tensorflow.MasterService/Reset"}

    def test_profiler_stays_refused(self) -> None:
        with pytest.raises(Reject) as info:
            self.table().lookup("/tensorflow.ProfilerService/Profile")
        assert info.value.reason is Reason.METHOD_ALWAYS_DENIED

    def test_cluster_facts(self) -> None:
        facts = self.table().lookup("/tensorflow.eager.EagerService/KeepAlive").inspect(b"\t\x07" + bytes(7))
        assert facts.cluster is not None and facts.cluster.handles[0].kind == "context"


class TestUpstreamRouter:
    def config(self, **extra):
        return validate_config({"listen": {"address": "127.0.0.1:0", "plaintext": True},
                                "upstreams": {"a": {"address": "127.0.0.1:1"},
                                              "b": {"address": "127.0.0.1:2"}}, **extra})

    def predict(self, model: str) -> tuple[Method, Facts]:
        return lookup(SERVING + "Predict"), Facts(targets=(ModelTarget(model),))

    def test_first_matching_route_then_default(self) -> None:
        """Routes are tried in order by model glob; unmatched models go to the default."""
        router = UpstreamRouter(self.config(routes=[{"models": ["fraud-*"], "upstream": "b"}],
                                            default_upstream="a"))
        assert router.upstream_for(*self.predict("fraud-x")) == "b"
        assert router.upstream_for(*self.predict("other")) == "a"
        health = lookup("/grpc.health.v1.Health/Check")
        assert router.upstream_for(health, Facts()) == "a"

    def test_no_default_refuses(self) -> None:
        """With several upstreams and no default, an unrouted call has no upstream."""
        router = UpstreamRouter(self.config(routes=[{"models": ["x"], "upstream": "b"}]))
        with pytest.raises(Reject) as info:
            router.upstream_for(*self.predict("y"))
        assert info.value.reason is Reason.NO_UPSTREAM and info.value.code is Code.NOT_FOUND
