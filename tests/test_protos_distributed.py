"""Tests for the distributed-TF messages in proxy/pb: every message we declare matches the
real TF 2.21 message field by field, and declares every field the real one has (the
inspector refuses unknown fields, so a missing one would refuse real traffic)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor

from proxy.pb import (
    distributed_config_pb2,
    distributed_coordination_pb2,
    distributed_eager_pb2,
    distributed_graph_pb2,
    distributed_master_pb2,
    distributed_worker_pb2,
)
from tests.test_protos import _compare

MODULES = (distributed_graph_pb2, distributed_config_pb2, distributed_master_pb2,
           distributed_worker_pb2, distributed_eager_pb2, distributed_coordination_pb2)


def _all_messages(descriptor: Descriptor) -> Iterator[Descriptor]:
    if not descriptor.GetOptions().map_entry:
        yield descriptor
    for nested in descriptor.nested_types:
        yield from _all_messages(nested)


OURS = {d.full_name: d for module in MODULES
        for top in module.DESCRIPTOR.message_types_by_name.values()
        for d in _all_messages(top)}


def _theirs_name(ours: str) -> str:
    assert ours.startswith("tfgate."), ours
    return ours.removeprefix("tfgate.")


class TestOwnPackage:
    def test_package(self) -> None:
        """Every distributed module lives under tfgate.*, never colliding with TensorFlow."""
        for module in MODULES:
            assert module.DESCRIPTOR.package.startswith("tfgate.tensorflow")

    def test_every_request_of_the_four_services(self) -> None:
        """A request message exists for each method of the four services (Appendix A)."""
        from proxy.inspect.distributed import METHODS
        assert len(METHODS) == 16 + 10 + 8 + 19


@pytest.fixture(scope="module")
def real() -> Any:
    """TF 2.21's descriptors: Python modules plus those compiled only into the libraries."""
    pytest.importorskip("tensorflow")
    from tests.tfdescriptors import real_pool
    return real_pool()


@pytest.mark.tf
class TestAgainstTensorFlow:
    @pytest.mark.parametrize("name", sorted(OURS))
    def test_fields_match(self, real: Any, name: str) -> None:
        """Each field we declare has the real number, wire type and oneof, recursively."""
        theirs = real.FindMessageTypeByName(_theirs_name(name))
        problems: list[str] = []
        _compare(OURS[name], theirs, name, set(), problems)
        assert problems == []

    @pytest.mark.parametrize("name", sorted(OURS))
    def test_no_real_field_missing(self, real: Any, name: str) -> None:
        """Every field of the real message is declared by ours (unknown fields are refused)."""
        theirs = real.FindMessageTypeByName(_theirs_name(name))
        ours = {f.number for f in OURS[name].fields}
        missing = [f"{f.name}={f.number}" for f in theirs.fields if f.number not in ours]
        assert missing == []

    def test_every_real_request_is_declared(self, real: Any) -> None:
        """Each request type of the four real services has a message of ours."""
        files = ["tensorflow/core/protobuf/master.proto", "tensorflow/core/protobuf/worker.proto",
                 "tensorflow/core/protobuf/eager_service.proto",
                 "xla/tsl/protobuf/coordination_service.proto"]
        requests = {m.full_name for f in files
                    for m in real.FindFileByName(f).message_types_by_name.values()
                    if m.name.endswith("Request")}
        assert requests - {_theirs_name(n) for n in OURS} == set()

    def test_real_services_and_kinds(self, real: Any) -> None:
        """Eager and coordination methods (the two services compiled as services) and their
        streaming kinds match our METHODS table."""
        from proxy.inspect.distributed import METHODS
        for file, package in (("tensorflow/core/protobuf/eager_service.proto", "tensorflow.eager"),
                              ("xla/tsl/protobuf/coordination_service.proto", "tensorflow")):
            for service in real.FindFileByName(file).services_by_name.values():
                for method in service.methods:
                    path = f"/{package}.{service.name}/{method.name}"
                    kind = ("stream" if method.client_streaming else "unary") + "_" + (
                        "stream" if method.server_streaming else "unary")
                    assert METHODS[path][0] == kind, path
