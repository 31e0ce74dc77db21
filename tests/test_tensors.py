"""Tests for proxy.inspect.tensors and proxy.inspect.examples: sizes from shape × dtype,
and every representation TF would ignore, truncate or expand refused (docs/wire-facts.md §2, §3)."""

from __future__ import annotations

import time

import pytest
from google.protobuf.internal.encoder import _VarintBytes

from proxy.call import TensorFacts
from proxy.dtypes import DTYPES, name_of
from proxy.errors import Code, Reason, Reject
from proxy.inspect import examples, serving, tensors
from proxy.pb import example_pb2, serving_pb2
from proxy.pb.tensor_pb2 import TensorProto

INT64_MAX = 2**63 - 1
FLOAT, DOUBLE, INT32, UINT8, STRING, COMPLEX64, INT64, BOOL = 1, 2, 3, 4, 7, 8, 9, 10
BFLOAT16, COMPLEX128, HALF, RESOURCE, VARIANT = 14, 18, 19, 20, 21


def tensor(dtype: int, dims: list[int] | None = None, **fields: object) -> TensorProto:
    t = TensorProto(dtype=dtype, **fields)  # type: ignore[arg-type]
    if dims is not None:
        t.tensor_shape.SetInParent()
        for size in dims:
            t.tensor_shape.dim.add(size=size)
    return t


def wire(t: TensorProto | bytes) -> TensorProto:
    """As the proxy sees it: parsed from bytes (unknown fields kept)."""
    return TensorProto.FromString(t if isinstance(t, bytes) else t.SerializeToString())


def facts(t: TensorProto | bytes, name: str = "x") -> TensorFacts:
    return tensors.inspect_tensor(name, wire(t))


def refused(t: TensorProto | bytes, name: str = "x") -> str:
    with pytest.raises(Reject) as info:
        tensors.inspect_tensor(name, wire(t))
    assert info.value.code is Code.INVALID_ARGUMENT
    assert info.value.reason is Reason.MALFORMED_REQUEST
    return info.value.message


def unknown_field(number: int) -> bytes:
    return _VarintBytes(number << 3) + b"\x01"


def string_content(*elements: bytes) -> bytes:
    return b"".join(_VarintBytes(len(e)) for e in elements) + b"".join(elements)


class TestDtype:
    """Only real, request-safe dtypes pass; the message names the input."""

    @pytest.mark.parametrize("dtype, text", [
        (0, "dtype DT_INVALID is never accepted"),                 # CVE-2022-23571
        (RESOURCE, "dtype DT_RESOURCE is never accepted"),         # CVE-2022-23564
        (VARIANT, "dtype DT_VARIANT is never accepted"),           # CVE-2021-29513
        (101, "reference dtype DT_FLOAT_REF is never accepted"),   # CVE-2022-23588
        (119, "reference dtype DT_HALF_REF is never accepted"),
        (120, "reference dtype DT_RESOURCE_REF is never accepted"),
        (9999, "unknown dtype 9999"),
        (34, "unknown dtype 34"),
        (-1, "unknown dtype -1"),
        (200, "unknown dtype 200"),
    ])
    def test_refused(self, dtype: int, text: str) -> None:
        """Invalid, resource, variant, reference and unknown dtype numbers are refused."""
        assert refused(tensor(dtype, [1])) == f'input "x": {text}'

    def test_invalid_dtype_with_zero_elements(self) -> None:
        """CVE-2022-23571: dtype 9999 with dim [0] is refused although it has no elements."""
        assert "unknown dtype 9999" in refused(tensor(9999, [0]))

    def test_dtype_zero_without_shape(self) -> None:
        """CVE-2022-23571: a bare dtype=0 (an empty TensorProto) is refused."""
        assert "DT_INVALID" in refused(TensorProto())

    def test_resource_handle(self) -> None:
        """CVE-2022-23564: a crafted resource_handle_val never gets past the dtype."""
        assert "DT_RESOURCE" in refused(tensor(RESOURCE, [1], resource_handle_val=[b"\x0a\x01x"]))

    def test_variant_nested_1000_deep(self) -> None:
        """A DT_VARIANT nested 1000 deep is refused without decoding it."""
        inner = b""
        for _ in range(1000):
            t = TensorProto(dtype=VARIANT, variant_val=[inner]).SerializeToString()
            inner = b"\x1a" + _VarintBytes(len(t)) + t  # VariantTensorDataProto.tensors
        assert "DT_VARIANT" in refused(tensor(VARIANT, [1], variant_val=[inner]))

    @pytest.mark.parametrize("dtype", sorted(DTYPES), ids=name_of)
    def test_every_known_dtype(self, dtype: int) -> None:
        """Each dtype reads its own field, and its size is elements × item size."""
        d = DTYPES[dtype]
        values: object = {"float8_val": b"\x01\x02", "string_val": [b"ab", b"c"],
                          "bool_val": [True, False]}.get(d.field, [1, 2])
        if d.pairs:
            values = [1, 2, 3, 4]
        got = facts(tensor(dtype, [2], **{d.field: values}))
        assert got.dtype == dtype and got.elements == 2
        assert got.decoded_bytes == (2 * d.itemsize if d.itemsize else 2 * 24 + 3)


class TestShape:
    """N is the product of the dims; shapes TF would misread are refused."""

    def test_no_shape_is_scalar(self) -> None:
        """Without tensor_shape a tensor is a scalar: one element."""
        got = facts(tensor(FLOAT, None, float_val=[1.0]))
        assert (got.shape, got.elements, got.decoded_bytes) == ((), 1, 4)

    def test_facts(self) -> None:
        """Shape, elements and bytes come from shape × dtype."""
        got = facts(tensor(INT64, [2, 3, 4], int64_val=[7]))
        assert got == TensorFacts("x", INT64, (2, 3, 4), 24, 192)

    @pytest.mark.parametrize("dims", [[], [2, 3]])
    def test_unknown_rank(self, dims: list[int]) -> None:
        """unknown_rank=true is refused, with or without dims."""
        t = tensor(FLOAT, dims)
        t.tensor_shape.unknown_rank = True
        assert "unknown_rank" in refused(t)

    def test_rank_254_passes(self) -> None:
        """Rank 254 (TF's maximum) passes inspection; max_dims is a limit."""
        assert facts(tensor(FLOAT, [1] * 254)).shape == (1,) * 254

    def test_rank_255(self) -> None:
        """Rank 255 is refused."""
        assert refused(tensor(FLOAT, [1] * 255)) == 'input "x": rank 255 > 254'

    @pytest.mark.parametrize("dims", [[-1], [-5], [3, -1], [-(2**63)]])
    def test_negative_dim(self, dims: list[int]) -> None:
        """CVE-2021-29521, CVE-2022-23571: a negative dim is refused."""
        assert "negative dimension" in refused(tensor(FLOAT, dims))

    @pytest.mark.parametrize("dims", [
        [2**32, 2**32],              # CVE-2021-41197
        [2**62, 4],                  # CVE-2021-41197
        [10**8, 10**8, 10**8],       # CVE-2021-41198 (tile-sized)
        [0, 2**62, 4],               # a 0 dim hides the overflow from TF 2.21
        [2**31, 2**32],              # exactly 2^63
    ])
    def test_overflow(self, dims: list[int]) -> None:
        """Element counts past int64 are refused, even when a 0 dim makes N zero."""
        assert refused(tensor(FLOAT, dims)) == 'input "x": element count overflows int64'

    def test_largest_count_passes(self) -> None:
        """N = 2^63-1 is a valid shape; only the limits refuse it."""
        assert facts(tensor(BOOL, [INT64_MAX])).elements == INT64_MAX

    def test_zero_dim(self) -> None:
        """A 0 dim gives N = 0; whether that is allowed is a limit (allow_empty)."""
        got = facts(tensor(FLOAT, [0, 5]))
        assert (got.elements, got.decoded_bytes) == (0, 0)


class TestValues:
    """The value-count policy: N values, 1 (repeated), or none (zero fill)."""

    def test_scalar_broadcast_is_sized_from_shape(self) -> None:
        """docs/wire-facts.md §2: dim [1e9] with one float_val is 1e9 elements, 4 GB:
        the 30 bytes do not count."""
        t = tensor(FLOAT, [10**9], float_val=[1.0])
        assert len(t.SerializeToString()) < 30
        got = facts(t)
        assert (got.elements, got.decoded_bytes) == (10**9, 4 * 10**9)

    def test_string_broadcast(self) -> None:
        """docs/wire-facts.md §2: dim [1e5] with one 1 MiB string_val is 1e5 copies of it."""
        got = facts(tensor(STRING, [10**5], string_val=[b"a" * 2**20]))
        assert got.max_string_bytes == 2**20
        assert got.string_bytes == 10**5 * 2**20
        assert got.decoded_bytes == 24 * 10**5 + 10**5 * 2**20

    @pytest.mark.parametrize("count", [0, 1, 4])
    def test_allowed_counts(self, count: int) -> None:
        """0, 1 and N values are accepted."""
        assert facts(tensor(FLOAT, [4], float_val=[1.0] * count)).elements == 4

    def test_more_values_than_elements(self) -> None:
        """docs/wire-facts.md §2: count > N: TF would silently drop the extra values."""
        assert refused(tensor(FLOAT, [2], float_val=[1, 2, 3])) == 'input "x": 3 values > 2 elements'

    def test_one_value_for_zero_elements(self) -> None:
        """A single value for an empty tensor is more values than elements."""
        assert "1 values > 0 elements" in refused(tensor(FLOAT, [0], float_val=[1]))

    def test_partial_count(self) -> None:
        """1 < count < N is refused: no real client sends it."""
        assert "2 values for 4 elements" in refused(tensor(FLOAT, [4], float_val=[1, 2]))

    def test_wrong_field(self) -> None:
        """docs/wire-facts.md §2: values in a field that does not belong to the dtype
        (FLOAT with int64_val)."""
        assert refused(tensor(FLOAT, [1], int64_val=[1])) == (
            'input "x": int64_val does not belong to dtype DT_FLOAT (it reads float_val)')

    def test_second_field(self) -> None:
        """The dtype's field plus another one is refused too."""
        assert "double_val does not belong" in refused(
            tensor(FLOAT, [1], float_val=[1], double_val=[1]))

    @pytest.mark.parametrize("dtype, field", [(COMPLEX64, "scomplex_val"),
                                              (COMPLEX128, "dcomplex_val")])
    def test_odd_complex(self, dtype: int, field: str) -> None:
        """docs/wire-facts.md §2: an odd number of complex parts is refused (TF would floor it)."""
        assert "odd number of values (3)" in refused(tensor(dtype, [2], **{field: [1, 2, 3]}))

    def test_complex_counts_pairs(self) -> None:
        """Two floats make one complex64 element."""
        assert facts(tensor(COMPLEX64, [2], scomplex_val=[1, 2, 3, 4])).decoded_bytes == 16
        assert "2 values > 1 elements" in refused(tensor(COMPLEX64, [1], scomplex_val=[1, 2, 3, 4]))

    def test_half_types_read_half_val(self) -> None:
        """bfloat16 and half read half_val, 2 bytes each."""
        assert facts(tensor(BFLOAT16, [3], half_val=[1])).decoded_bytes == 6
        assert "float_val does not belong" in refused(tensor(HALF, [1], float_val=[1.0]))

    def test_string_values(self) -> None:
        """N strings: 24 bytes each plus their lengths; the longest is reported."""
        got = facts(tensor(STRING, [3], string_val=[b"", b"abcd", b"ef"]))
        assert (got.string_bytes, got.max_string_bytes, got.decoded_bytes) == (6, 4, 78)

    def test_no_string_values(self) -> None:
        """No string_val fills with empty strings: 24 bytes each."""
        got = facts(tensor(STRING, [5]))
        assert (got.string_bytes, got.decoded_bytes) == (0, 120)


class TestTensorContent:
    """tensor_content: exact length, no typed values alongside, strings decoded with care."""

    def test_exact_length(self) -> None:
        """Exactly N × itemsize bytes pass."""
        assert facts(tensor(FLOAT, [2, 2], tensor_content=b"\0" * 16)).decoded_bytes == 16

    @pytest.mark.parametrize("size", [15, 17, 4])
    def test_wrong_length(self, size: int) -> None:
        """docs/wire-facts.md §2: a length other than N × itemsize is refused."""
        assert refused(tensor(FLOAT, [2, 2], tensor_content=b"\0" * size)) == (
            f'input "x": tensor_content has {size} bytes, expected 4 elements × 4 = 16')

    def test_content_for_zero_elements(self) -> None:
        """Content for an empty tensor has the wrong length too."""
        assert "expected 0 elements" in refused(tensor(FLOAT, [0], tensor_content=b"\0" * 4))

    def test_content_and_values(self) -> None:
        """docs/wire-facts.md §2: tensor_content and float_val both set is refused (TF ignores the values)."""
        assert refused(tensor(FLOAT, [1], tensor_content=b"\0" * 4, float_val=[1])) == (
            'input "x": tensor_content and float_val are both set')

    def test_bool_bytes(self) -> None:
        """docs/wire-facts.md §2: bool content must be 0 or 1 bytes."""
        assert facts(tensor(BOOL, [3], tensor_content=b"\0\1\0")).decoded_bytes == 3
        assert "other than 0 and 1" in refused(tensor(BOOL, [3], tensor_content=b"\0\2\0"))

    def test_strings(self) -> None:
        """String content: all varint lengths, then all bytes."""
        content = string_content(b"ab", b"", b"x" * 300)
        got = facts(tensor(STRING, [3], tensor_content=content))
        assert (got.string_bytes, got.max_string_bytes) == (302, 300)
        assert got.decoded_bytes == 3 * 24 + 302

    def test_one_byte_for_a_billion_strings(self) -> None:
        """docs/wire-facts.md §2: 1 byte of string content with dim [1e9] is refused at once (TF would
        allocate ~28 GB first)."""
        start = time.perf_counter()
        message = refused(tensor(STRING, [10**9], tensor_content=b"\x00"))
        assert time.perf_counter() - start < 0.5
        assert message == 'input "x": tensor_content of 1 bytes cannot hold 1000000000 string lengths'

    @pytest.mark.parametrize("content", [
        string_content(b"ab", b"c") + b"!",        # bytes left over
        string_content(b"ab", b"c")[:-1],          # bytes missing
        string_content(b"x" * 200, b"c")[:-1],     # long element, bytes missing
    ])
    def test_string_lengths_must_add_up(self, content: bytes) -> None:
        """The lengths must add up to exactly the bytes that follow them."""
        assert "string lengths add up to" in refused(tensor(STRING, [2], tensor_content=content))

    def test_bad_varint(self) -> None:
        """A length of more than 5 varint bytes, or cut off, is refused."""
        assert "bad string length" in refused(
            tensor(STRING, [1], tensor_content=b"\x80\x80\x80\x80\x80\x00"))
        assert "bad string length" in refused(tensor(STRING, [2], tensor_content=b"\x01\x80"))

    def test_one_long_length_among_millions(self) -> None:
        """One multi-byte length among millions of 1-byte ones costs C speed, not a
        Python loop per element (64 MiB of content once burnt ~30 s of proxy CPU)."""
        n = 4_000_000
        content = b"\x80\x01" + b"\x00" * (n - 1) + b"x" * 128
        start = time.perf_counter()
        got = facts(tensor(STRING, [n], tensor_content=content))
        assert time.perf_counter() - start < 0.5
        assert (got.string_bytes, got.max_string_bytes) == (128, 128)

    @pytest.mark.parametrize("content", [b"\x80\x00", b"\x81\x00", b"\x80\x80\x80\x80\x10"])
    def test_overlong_length(self, content: bytes) -> None:
        """A multi-byte length below 128 (TF's encoder never writes one) is refused: it
        would let every length cost a Python step without any string bytes behind it."""
        assert "overlong string length" in refused(tensor(STRING, [1], tensor_content=content))

    def test_multi_byte_lengths(self) -> None:
        """Multi-byte lengths anywhere among 1-byte ones decode as TF decodes them."""
        elements = (b"a", b"x" * 200, b"", b"y" * 70_000, b"bc", b"z" * 128)
        got = facts(tensor(STRING, [6], tensor_content=string_content(*elements)))
        assert (got.string_bytes, got.max_string_bytes) == (sum(map(len, elements)), 70_000)

    def test_empty_string_tensor_content(self) -> None:
        """N = 0 with content is refused; with none it is an empty tensor."""
        assert "add up to 0" in refused(tensor(STRING, [0], tensor_content=b"\x00"))


class TestUnknownFields:
    """Fields tfgate's schema lacks are refused: a newer server might act on them."""

    def test_tensor_proto(self) -> None:
        """In TensorProto."""
        data = tensor(FLOAT, [1], float_val=[1]).SerializeToString() + unknown_field(19)
        assert refused(data) == 'input "x": unknown field number 19'

    def test_shape(self) -> None:
        """In TensorShapeProto."""
        shape = b"\x12\x02\x08\x01" + unknown_field(9)   # dim{size:1}, field 9
        data = b"\x08\x01\x12" + _VarintBytes(len(shape)) + shape
        assert refused(data) == 'input "x".tensor_shape: unknown field number 9'

    def test_dim(self) -> None:
        """In TensorShapeProto.Dim."""
        dim = b"\x08\x01" + unknown_field(7)
        shape = b"\x12" + _VarintBytes(len(dim)) + dim
        data = b"\x08\x01\x12" + _VarintBytes(len(shape)) + shape
        assert refused(data) == 'input "x".tensor_shape.dim[0]: unknown field number 7'


class TestPredict:
    """Through the Predict parser: every input is inspected and named."""

    def request(self, **inputs: TensorProto) -> bytes:
        req = serving_pb2.PredictRequest()
        req.model_spec.name = "m"
        for name, t in inputs.items():
            req.inputs[name].CopyFrom(t)
        return req.SerializeToString()

    def test_all_inputs(self) -> None:
        """One TensorFacts per input."""
        got = serving.predict(self.request(a=tensor(FLOAT, [2]), b=tensor(INT32, [3])))
        assert sorted((t.name, t.elements) for t in got.tensors) == [("a", 2), ("b", 3)]

    def test_bad_input_is_named(self) -> None:
        """The refused input is the one named."""
        with pytest.raises(Reject) as info:
            serving.predict(self.request(good=tensor(FLOAT, [1]), bad=tensor(FLOAT, [-1])))
        assert info.value.message.startswith('input "bad": negative dimension')

    def test_odd_names_escaped(self) -> None:
        """Names with quotes or control characters are escaped and cut in messages."""
        assert tensors.label('a"b\n') == 'input "a\\"b\\n"'
        assert tensors.label("n" * 100) == f'input "{"n" * 64}..."'


def _input(n: int, *, context: bytes = b"", features: int = 1) -> example_pb2.Input:
    value = example_pb2.Input()
    target = value.example_list_with_context if context else value.example_list
    if context:
        target.context.features.feature["ctx"].bytes_list.value.append(context)
    for _ in range(n):
        example = target.examples.add()
        for j in range(features):
            example.features.feature[f"f{j}"].float_list.value.append(1.0)
    return example_pb2.Input.FromString(value.SerializeToString())


def _inspect(value):
    """inspect_input as serving.py calls it: with the request bytes the input came in."""
    request = serving_pb2.ClassificationRequest()
    if value is not None:
        request.input.CopyFrom(value)
    return examples.inspect_input(value, request.SerializeToString())


class TestExamples:
    """Classify/Regress/MultiInference inputs: counts and the context amplification."""

    @pytest.mark.parametrize("value", [None, example_pb2.Input(),
                                       example_pb2.Input(example_list=example_pb2.ExampleList())])
    def test_empty(self, value: example_pb2.Input | None) -> None:
        """A missing or empty input is refused, as the server does ("Input is empty")."""
        with pytest.raises(Reject) as info:
            _inspect(value)
        assert (info.value.code, info.value.message) == (Code.INVALID_ARGUMENT,
                                                         "input is empty")

    def test_facts(self) -> None:
        """Counts, sizes and the decoded size include the context once per example."""
        got = _inspect(_input(3, context=b"c" * 100, features=2))
        assert got.examples == 3
        assert got.max_features == 3                       # 2 own + 1 context
        assert got.context_bytes == _input(0, context=b"c" * 100
                                           ).example_list_with_context.context.ByteSize()
        per_example = example_pb2.Example()
        for j in range(2):
            per_example.features.feature[f"f{j}"].float_list.value.append(1.0)
        assert got.decoded_bytes == 3 * (24 + got.context_bytes) + 3 * per_example.ByteSize()
        assert 100 < got.max_value_bytes < 120              # the context's feature

    def test_large_context_many_empty_examples(self) -> None:
        """docs/wire-facts.md §1.3: a 1 MiB context with 10k empty examples is ~10 GB
        once the server expands it."""
        value = example_pb2.Input()
        value.example_list_with_context.context.features.feature["c"].bytes_list.value.append(
            b"x" * 2**20)
        for _ in range(10_000):
            value.example_list_with_context.examples.add()
        got = _inspect(example_pb2.Input.FromString(value.SerializeToString()))
        assert got.examples * got.context_bytes > 10 * 10**9
        assert got.decoded_bytes > 10 * 10**9

    def test_max_value_bytes_any_example(self) -> None:
        """The largest feature in any example is found."""
        value = _input(3)
        value.example_list.examples[1].features.feature["big"].bytes_list.value.append(b"y" * 5000)
        got = _inspect(example_pb2.Input.FromString(value.SerializeToString()))
        assert 5000 < got.max_value_bytes < 5020 and got.max_features == 2

    def test_hard_ceiling(self) -> None:
        """More than MAX_EXAMPLES examples are refused before any per-example work."""
        data = b"\x0a\x00" * (examples.MAX_EXAMPLES + 1)
        value = example_pb2.Input.FromString(b"\x0a" + _VarintBytes(len(data)) + data)
        with pytest.raises(Reject) as info:
            _inspect(value)
        assert info.value.code is Code.RESOURCE_EXHAUSTED
        assert f"{examples.MAX_EXAMPLES + 1} examples" in info.value.message

    def test_unknown_field(self) -> None:
        """Unknown fields in Input or the example list are refused."""
        data = _input(1).SerializeToString() + unknown_field(5)
        with pytest.raises(Reject, match="input: unknown field number 5"):
            _inspect(example_pb2.Input.FromString(data))

    def test_through_classify(self) -> None:
        """Classify without an input is refused like the server does."""
        req = serving_pb2.ClassificationRequest()
        req.model_spec.name = "m"
        with pytest.raises(Reject, match="input is empty"):
            serving.classify(req.SerializeToString())
