"""The bytes tfgate judged, read by TensorFlow's own C++ protobuf parser (tf.io.parse_tensor:
ParseFromString, then Tensor::FromProto), give the tensor tfgate sized.

tests/test_inspect_fuzz.py re-serializes what Python parsed before TF sees it, so the
merge has already happened in upb. Here TF gets the raw wire bytes, written field by field
the ways a hostile client can: a singular message (the shape) given twice, dims merged,
a scalar given twice (the last wins), packed and unpacked values mixed, overlong and
truncating varints (a dtype of 2^32 + 1 is DT_FLOAT to both), wrong wire types (unknown to
both, refused by tfgate in the tensor), fields in any order (docs/wire-facts.md §1.2)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from proxy.errors import Reject
from proxy.inspect import serving

pytestmark = pytest.mark.tf


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = b""
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            return out + bytes([low])
        out += bytes([low | 0x80])


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _ld(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


OVERLONG_TWO = b"\x82\x80\x80\x80\x80\x80\x80\x80\x80\x00"  # 2, in ten bytes

_dim = st.one_of(
    st.integers(0, 4).map(lambda n: _key(1, 0) + _varint(n)),
    st.tuples(st.integers(0, 4), st.integers(0, 3)).map(  # size twice: the last wins
        lambda p: _key(1, 0) + _varint(p[0]) + _key(1, 0) + _varint(p[1])),
    st.integers(0, 4).map(lambda n: _key(1, 1) + struct.pack("<q", n)),  # wrong wire type
    st.just(_key(1, 0) + OVERLONG_TWO),
    st.integers(0, 4).map(lambda n: _ld(2, b"name") + _key(1, 0) + _varint(n)),
)
_shape = st.tuples(st.lists(_dim, max_size=3), st.sampled_from(
    [b"", _key(3, 0) + b"\x00", _key(3, 0) + b"\x01", _key(2, 0) + b"\x03"])).map(
    lambda p: b"".join(_ld(2, d) for d in p[0]) + p[1])
_dtype = st.sampled_from([1, 2, 3, 7, 8, 9, 10, 19, 1 + (1 << 32), 9 - (1 << 33)]).map(
    lambda d: _key(1, 0) + _varint(d))


def _values(n: int) -> st.SearchStrategy[bytes]:
    return st.sampled_from([
        _ld(5, struct.pack("<f", 1.5) * n),                      # packed float
        (_key(5, 5) + struct.pack("<f", 2.5)) * n,               # unpacked float
        _ld(5, struct.pack("<f", 1.0)) + _key(5, 5) + struct.pack("<f", 2.0),  # mixed
        _ld(7, _varint(7) * n), _ld(10, _varint(5) * n), _ld(11, _varint(2) * n),
        _ld(13, _varint(0x3C00) * n), _ld(9, struct.pack("<f", 1.0) * n),
        _ld(8, b"ab") * n, _ld(4, b"\x00" * (4 * n)), _key(4, 0) + _varint(3), b""])


@st.composite
def wire_tensors(draw: st.DrawFn) -> bytes:
    parts = [draw(_dtype), *[_ld(2, draw(_shape)) for _ in range(draw(st.integers(1, 3)))],
             draw(st.integers(0, 8).flatmap(_values))]
    if draw(st.booleans()):
        parts.append(_key(3, 0) + _varint(1))  # version_number
    return b"".join(draw(st.permutations(parts)))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tensor=wire_tensors())
def test_tensorflow_reads_the_shape_tfgate_sized(tensor: bytes) -> None:
    tf = pytest.importorskip("tensorflow")
    request = _ld(1, _ld(1, b"m")) + _ld(2, _ld(1, b"x") + _ld(2, tensor))
    try:
        (facts,) = serving.predict(request).tensors
    except Reject:
        event("refused")
        return
    event("accepted")
    parsed = tf.io.parse_tensor(tensor, tf.dtypes.as_dtype(facts.dtype))
    assert tuple(parsed.shape.as_list()) == facts.shape
    assert int(tf.size(parsed)) == facts.elements
