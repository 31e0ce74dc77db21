"""REST front, pure stages: paths, body caps and strict JSON (no sockets, no TensorFlow)."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest

from proxy.errors import HTTP_FOR_CODE, Code, Reason, Reject
from proxy.rest import body, errors, paths

PREDICT = "/tensorflow.serving.PredictionService/Predict"


class TestPaths:
    @pytest.mark.parametrize("target, verb, name, version, label", [
        ("/v1/models/m:predict", "predict", "m", None, None),
        ("/v1/models/m/versions/7:classify", "classify", "m", 7, None),
        ("/v1/models/m/versions/007:regress", "regress", "m", 7, None),
        ("/v1/models/m/labels/stable:predict", "predict", "m", None, "stable"),
        ("/V1/MODELS/m/VERSIONS/2:predict", "predict", "m", 2, None),  # (?i), verb lower
        ("/v1/models/a%2Fb%3Ac/labels/x%20y:predict", "predict", "a/b:c", None, "x y"),
        ("/v1/models/a+b:predict", "predict", "a+b", None, None),       # '+' stays '+'
        ("/v1/models/bad%zz:predict", "predict", "bad%zz", None, None),  # not %XX: kept
    ])
    def test_post(self, target, verb, name, version, label) -> None:
        r = paths.route("POST", target)
        assert (r.verb, r.target.name, r.target.version, r.target.label) == (
            verb, name, version, label)
        assert r.target.signature is None and r.has_body

    @pytest.mark.parametrize("target, verb, name, version, label", [
        ("/v1/models/m", "status", "m", None, None),
        ("/v1/models/m/versions/3", "status", "m", 3, None),
        ("/v1/models/m/labels/canary/metadata", "metadata", "m", None, "canary"),
        ("/v1/models/m/metadata", "metadata", "m", None, None),
        ("/v1/models/m/METADATA", "status", "m", None, None),  # ModelServer: == "metadata"
        ("/v1/models/metadata", "status", "metadata", None, None),
        ("/v1/models/m/labels/metadata", "status", "m", None, "metadata"),
        ("/v1/models/m?x=1", "status", "m?x=1", None, None),  # the query is matched too
    ])
    def test_get(self, target, verb, name, version, label) -> None:
        r = paths.route("GET", target)
        assert (r.verb, r.target.name, r.target.version, r.target.label) == (
            verb, name, version, label)
        assert r.method_path == paths.METHOD_PATHS[verb] and not r.has_body

    @pytest.mark.parametrize("method, target", [
        ("POST", "/v1/models/m:PREDICT"), ("POST", "/v1/models/m:explain"),
        ("POST", "/v1/models/m"), ("GET", "/v1/models/m:predict"),
        ("POST", "/v1/models/m:predict?x=1"), ("POST", "/v1/models/m/versions/x:predict"),
        ("POST", "/v1/models/m/versions/1/labels/a:predict"), ("GET", "/v1/models/m/extra"),
        ("POST", "/v2/models/m:predict"), ("POST", "v1/models/m:predict"),
        ("POST", "/v1/models/m é:predict"), ("POST", "/v1/models/m\x00:predict"),
        ("POST", "/v1/models/" + "m" * 5000 + ":predict"),
        ("GET", "/v1/models/\u0661"),  # Unicode digits are not \d
    ])
    def test_not_found(self, method, target) -> None:
        with pytest.raises(Reject) as info:
            paths.route(method, target)
        assert errors.http_status(info.value) == 404
        assert info.value.reason is Reason.UNKNOWN_METHOD

    @pytest.mark.parametrize("method, target", [
        ("GET", "/v1/models"), ("GET", "/v1/models/versions/3"),
        ("POST", "/v1/models/m/versions/9223372036854775808:predict"),
        ("POST", "/v1/models/%ff:predict"), ("POST", "/v1/models/a%00b:predict"),
        ("GET", "/v1/models/m/labels/%0a"),
        # dot segments once decoded: forwarded, URL code and proxies would remove them
        ("GET", "/v1/models/m/labels/./metadata"), ("GET", "/v1/models/m/labels/%2e%2E"),
        ("GET", "/v1/models/../metadata"), ("POST", "/v1/models/%2E:predict"),
        ("POST", "/v1/models/m/labels/..:regress"),
        ("GET", "/v1/models/team-a%2F..%2Fsecret/metadata"),   # `team-a/**` matches it
        ("POST", "/v1/models/a%5C..%5Cb:predict"), ("GET", "/v1/models/m/labels/x%2F."),
    ])
    def test_bad_request(self, method, target) -> None:
        with pytest.raises(Reject) as info:
            paths.route(method, target)
        assert errors.http_status(info.value) == 400

    @pytest.mark.parametrize("method", ["PUT", "DELETE", "OPTIONS", "HEAD", "post"])
    def test_other_methods(self, method) -> None:
        with pytest.raises(Reject) as info:
            paths.route(method, "/v1/models/m:predict")
        assert errors.http_status(info.value) == 405

    @pytest.mark.parametrize("target, canonical", [
        ("/V1/Models/a%2fb/Versions/0012:predict", "/v1/models/a%2Fb/versions/12:predict"),
        ("/v1/models/m/labels/x%20y/metadata", "/v1/models/m/labels/x%20y/metadata"),
        ("/v1/models/m?x=1", "/v1/models/m%3Fx%3D1"),
        ("/v1/models/.../labels/..a/metadata", "/v1/models/.../labels/..a/metadata"),
        ("/v1/models/a%2F..b/metadata", "/v1/models/a%2F..b/metadata"),
    ])
    def test_upstream_path_is_canonical(self, target, canonical) -> None:
        method = "POST" if ":" in target else "GET"
        r = paths.route(method, target)
        assert r.upstream_path() == canonical
        again = paths.route(method, canonical)
        assert again.target == r.target and again.verb == r.verb


LIMITS = body.BodyLimits(max_wire_bytes=1 << 20, max_body_bytes=4 << 20)


def read(data: bytes, encoding: str = "", chunk: int = 1 << 16,
         limits: body.BodyLimits = LIMITS) -> bytes:
    reader = body.BodyReader(body.encoding_of([encoding] if encoding else []), None, limits)
    for i in range(0, len(data), chunk):
        reader.feed(data[i:i + chunk])
    return reader.finish()


def status_of(call) -> int:
    with pytest.raises(Reject) as info:
        call()
    return errors.http_status(info.value)


class TestBody:
    def test_identity_gzip_deflate(self) -> None:
        data = b'{"instances": [1.0]}' * 100
        assert read(data) == data
        assert read(gzip.compress(data), "gzip", chunk=7) == data
        assert read(zlib.compress(data), "Deflate") == data

    def test_content_length_over_cap_refused_before_reading(self) -> None:
        assert status_of(lambda: body.BodyReader("", LIMITS.max_wire_bytes + 1, LIMITS)) == 413

    def test_wire_cap(self) -> None:
        assert status_of(lambda: read(b"x" * (LIMITS.max_wire_bytes + 1))) == 413

    def test_gzip_bomb_stops_at_the_cap(self) -> None:
        bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in ~64 KiB
        assert len(bomb) < LIMITS.max_wire_bytes
        assert status_of(lambda: read(bomb, "gzip")) == 413

    @pytest.mark.parametrize("data, encoding", [
        (b"not gzip", "gzip"), (gzip.compress(b"{}")[:-4], "gzip"),
        (gzip.compress(b"{}") + b"x", "gzip"), (gzip.compress(b"{}") * 2, "gzip"),
        (zlib.compress(b"{}")[:-1], "deflate"),
    ])
    def test_bad_compressed_data(self, data, encoding) -> None:
        assert status_of(lambda: read(data, encoding)) == 400

    @pytest.mark.parametrize("values", [["br"], ["gzip, gzip"], ["gzip", "gzip"], ["zstd"]])
    def test_unsupported_encoding(self, values) -> None:
        assert status_of(lambda: body.encoding_of(values)) == 415


class TestJson:
    def test_plain(self) -> None:
        assert body.parse_json(b'{"a": [1, 2.5, "x", true, null]}') == {
            "a": [1, 2.5, "x", True, None]}

    def test_nan_and_infinity_as_modelserver(self) -> None:
        doc = body.parse_json(b'{"a": [NaN, Infinity, -Infinity, 1e308]}')
        assert [str(v) for v in doc["a"]] == ["nan", "inf", "-inf", "1e+308"]

    @pytest.mark.parametrize("text", [
        b'{"a": 1, "a": 2}', b'{"x": {"b": [], "b": []}}', b'{"i": [{"k": 1, "k": 1}]}',
        b'{"a": 1, "\\u0061": 2}',
    ])
    def test_duplicate_keys_refused_at_any_depth(self, text) -> None:
        with pytest.raises(Reject, match="more than once"):
            body.parse_json(text)

    @pytest.mark.parametrize("text, problem", [
        (b"", "empty"), (b"[1]", "not a JSON object"), (b'{"a": 1} x', "Parse error"),
        (b'{"a": 1}{}', "Parse error"), (b'{"a": "\xff"}', "UTF-8"),
        (b'\xef\xbb\xbf{"a": 1}', "Parse error"), (b'{"a": 1e400}', "too big"),
        (b'{"a": [-1E+999]}', "too big"), (b'{"a": 1' + b"0" * 310 + b'.5}', "too big"),
        (b'{"a": ' + b"[" * 100000 + b"]" * 100000 + b"}", "nested deeper than 48"),
        (b'{"a": ' + b"1" * 5000 + b"}", "number of 5000 characters"),
        (b'{"a": "' + b"x" * (4 * 2**20 + 1) + b'"}', "string longer than"),
        (b'{"a": Inf}', "Parse error"),
    ])
    def test_refused(self, text, problem) -> None:
        with pytest.raises(Reject, match=problem) as info:
            body.parse_json(text)
        assert info.value.code is Code.INVALID_ARGUMENT

    def test_big_exponent_that_fits_is_a_number(self) -> None:
        assert body.parse_json(b'{"a": 1.5e-300, "s": "e999"}') == {"a": 1.5e-300, "s": "e999"}
        digits = "9" * 400
        assert body.parse_json(b'{"s": "%s", "a": 2.5}' % digits.encode()) == {"s": digits, "a": 2.5}


class TestErrors:
    def test_table_matches_modelserver_for_every_code(self) -> None:
        assert set(HTTP_FOR_CODE) == set(Code)
        assert errors.status_for_code(Code.FAILED_PRECONDITION) == 400
        assert errors.status_for_code(Code.RESOURCE_EXHAUSTED) == 429

    def test_reason_overrides_code(self) -> None:
        refusal = Reject(Reason.LIMIT_EXCEEDED, "big")
        assert errors.http_status(refusal) == 413
        rate = Reject(Reason.RATE_LIMITED, "slow down")
        assert errors.http_status(rate) == 429
        denied = Reject(Reason.MODEL_NOT_ALLOWED, "no")
        assert errors.http_status(denied) == 403

    def test_body_shape(self) -> None:
        assert json.loads(errors.error_body('say "é"')) == {"error": 'say "é"'}
        assert errors.error_body("x") == b'{\n    "error": "x"\n}'
