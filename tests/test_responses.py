"""Tests for proxy.responses: the filters keep exactly what is visible, leave everything
else as the upstream's bytes, and refuse a response they cannot read."""

from __future__ import annotations

import pytest
from google.protobuf import any_pb2

from proxy import responses
from proxy.errors import Reason, Reject
from proxy.pb import serving_responses_pb2 as pb


def _metadata(*names: str, extra: bool = True) -> bytes:
    defs = pb.SignatureDefMap()
    for name in names:
        defs.signature_def[name].method_name = f"method-of-{name}"
    response = pb.GetModelMetadataResponse()
    response.model_spec.name = "m"
    packed = response.metadata["signature_def"]  # packed as ModelServer packs it
    packed.type_url, packed.value = responses.SIGNATURE_DEF_MAP, defs.SerializeToString()
    if extra:
        response.metadata["other"].CopyFrom(any_pb2.Any(type_url="x/y", value=b"\x01\x02"))
    return response.SerializeToString()


def _names(data: bytes) -> set[str]:
    response = pb.GetModelMetadataResponse.FromString(data)
    return set(pb.SignatureDefMap.FromString(response.metadata["signature_def"].value)
               .signature_def)


class TestMetadata:
    def test_keeps_only_visible_signatures_and_the_rest(self) -> None:
        data = _metadata("a", "b", "c")
        kept = responses.metadata(data, lambda name: name != "b")
        assert _names(kept) == {"a", "c"}
        response = pb.GetModelMetadataResponse.FromString(kept)
        assert response.model_spec.name == "m"
        assert response.metadata["other"].value == b"\x01\x02"
        defs = pb.SignatureDefMap.FromString(response.metadata["signature_def"].value)
        assert defs.signature_def["a"].method_name == "method-of-a"

    def test_nothing_hidden_returns_the_same_bytes(self) -> None:
        data = _metadata("a", "b")
        assert responses.metadata(data, lambda name: True) is data

    def test_deterministic(self) -> None:
        one = responses.metadata(_metadata("z", "a", "m"), lambda n: n != "m")
        two = responses.metadata(_metadata("a", "z", "m"), lambda n: n != "m")
        assert one == two

    def test_unreadable_is_refused(self) -> None:
        with pytest.raises(Reject) as info:
            responses.metadata(b"\xff\xff\xff", lambda n: True)
        assert info.value.reason is Reason.UPSTREAM_STATUS

    @pytest.mark.parametrize("type_url", ["example.org/tensorflow.serving.SignatureDefMap",
                                          "/tensorflow.serving.SignatureDefMap"])
    def test_any_prefix_of_the_type_url_is_filtered(self, type_url: str) -> None:
        """A client's Any.Unpack reads the map whatever precedes the last '/'."""
        response = pb.GetModelMetadataResponse.FromString(_metadata("a", "b"))
        response.metadata["signature_def"].type_url = type_url
        kept = responses.metadata(response.SerializeToString(), lambda n: n != "b")
        assert _names(kept) == {"a"}

    def test_signature_def_of_another_type_is_refused(self) -> None:
        """It cannot be shown to hide nothing, so it is not relayed."""
        response = pb.GetModelMetadataResponse.FromString(_metadata("a"))
        response.metadata["signature_def"].type_url = "type.googleapis.com/x.Other"
        with pytest.raises(Reject) as info:
            responses.metadata(response.SerializeToString(), lambda n: True)
        assert info.value.reason is Reason.UPSTREAM_STATUS


class TestStatus:
    def _status(self, *versions: int) -> bytes:
        response = pb.GetModelStatusResponse()
        for v in versions:
            entry = response.model_version_status.add()
            entry.version = v
            entry.state = 30
        return response.SerializeToString()

    def test_keeps_visible_versions(self) -> None:
        kept = responses.status(self._status(1, 2, 3), lambda v, highest: v == 1 or highest)
        got = pb.GetModelStatusResponse.FromString(kept)
        assert [(s.version, s.state) for s in got.model_version_status] == [(1, 30), (3, 30)]

    @pytest.mark.parametrize(("states", "latest"), [
        ((30, 30, 20), 2),   # 3 still LOADING: "latest" serves 2
        ((30, 30, 50), 2),   # 3 unloaded (END)
        ((30, 10, 0), 1),    # only 1 AVAILABLE
        ((20, 20, 50), 3),   # none AVAILABLE: the highest listed
    ])
    def test_latest_is_the_highest_available(self, states, latest) -> None:
        """A caller granted only `latest` sees the version a request without one is
        served by, not a newer one it could never call."""
        response = pb.GetModelStatusResponse()
        for version, state in zip((1, 2, 3), states, strict=True):
            entry = response.model_version_status.add()
            entry.version, entry.state = version, state  # type: ignore[assignment]
        kept = responses.status(response.SerializeToString(), lambda v, highest: highest)
        got = pb.GetModelStatusResponse.FromString(kept)
        assert [s.version for s in got.model_version_status] == [latest]

    def test_all_visible_returns_the_same_bytes(self) -> None:
        data = self._status(1, 2)
        assert responses.status(data, lambda v, h: True) is data


def test_rest_status_latest_is_the_highest_available() -> None:
    """The REST front's filter of ModelServer's status JSON reads `latest` the same way."""
    from proxy.rest import visible

    doc = {"model_version_status": [
        {"version": "1", "state": "AVAILABLE"}, {"version": "2", "state": "AVAILABLE"},
        {"version": "3", "state": "LOADING"}]}
    assert visible._hide_versions(doc, lambda v, highest: highest)
    assert doc["model_version_status"] == [{"version": "2", "state": "AVAILABLE"}]


def test_rest_status_versions_are_read_as_modelserver_writes_them() -> None:
    """int64 in proto3 JSON: a decimal string or an integer; anything else int() would
    also read is refused rather than guessed at (a client may read it otherwise)."""
    from proxy.errors import Reject
    from proxy.rest import visible

    for version in ("3", 3, "-1"):
        doc = {"model_version_status": [{"version": version, "state": "AVAILABLE"}]}
        assert not visible._hide_versions(doc, lambda v, is_latest: True)
    for odd in (" 2", "1_0", 2.7, "2.0", True, None, "١"):
        doc = {"model_version_status": [{"version": odd, "state": "AVAILABLE"}]}
        with pytest.raises(Reject):
            visible._hide_versions(doc, lambda v, is_latest: True)
