"""Predict inputs: what ModelServer will allocate for each TensorProto, and whether tfgate
can vouch for how it is written (docs/wire-facts.md §2).

Sizes come from shape × dtype, never from the values on the wire: TF fills a short value
list by repeating its last value, so 30 bytes can ask for gigabytes. Every representation
TF would silently ignore, truncate or expand is refused here with INVALID_ARGUMENT, for
every config; how big a valid tensor may be is for `limits.py` to judge.

Value-count policy: the dtype's own field holds N values, 1 value (TF repeats it; real
clients send this when all elements are equal), or none (zero fill); anything else is
refused. Decoded size: N × itemsize, and for DT_STRING 24 × N (sizeof tstring) plus the
length of every element after fill.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from google.protobuf.unknown_fields import UnknownFieldSet

from proxy.call import TensorFacts
from proxy.dtypes import DTYPES, NEVER_ALLOWED, REF_OFFSET, name_of
from proxy.errors import Reject, malformed
from proxy.inspect.wire import reject_unknown_fields
from proxy.pb.tensor_pb2 import TensorProto, TensorShapeProto

INT64_MAX = 2**63 - 1
MAX_RANK = 254            # TensorShape::MaxDimensions(); 255 means unknown rank
TSTRING_BYTES = 24        # sizeof(tensorflow::tstring), paid per element before any data
_UINT32 = 0xFFFFFFFF
_NOT_VALUES = frozenset({"dtype", "tensor_shape", "version_number", "tensor_content"})


def inspect_inputs(inputs: Mapping[str, TensorProto]) -> tuple[TensorFacts, ...]:
    return tuple(inspect_tensor(name, tensor) for name, tensor in inputs.items())


def label(name: str) -> str:
    """`input "x"`, with odd or very long names escaped and cut (they reach clients)."""
    if len(name) <= 64 and name.isprintable() and '"' not in name and "\\" not in name:
        return f'input "{name}"'
    return "input " + json.dumps(name[:64] + ("..." if len(name) > 64 else ""))


def _bad(name: str, problem: str) -> Reject:
    return malformed(f"{label(name)}: {problem}")


def inspect_tensor(name: str, tensor: TensorProto) -> TensorFacts:
    dtype_number, shape_msg, content, values = 0, None, b"", []
    for field, value in tensor.ListFields():  # one pass over the fields actually present
        key = field.name
        if key == "dtype":
            dtype_number = value
        elif key == "tensor_shape":
            shape_msg = value
        elif key == "tensor_content":
            content = value
        elif key not in _NOT_VALUES:
            values.append((key, value))
    reject_unknown_fields(tensor, lambda: label(name))
    dtype = DTYPES.get(dtype_number)
    if dtype is None:
        raise _bad(name, _dtype_problem(dtype_number))
    shape = _shape(name, shape_msg) if shape_msg is not None else ()
    elements = _elements(name, shape)
    string_bytes = max_string = 0
    if content:
        if values:
            raise _bad(name, f"tensor_content and {values[0][0]} are both set")
        if dtype.itemsize:
            expected = elements * dtype.itemsize
            if len(content) != expected:
                raise _bad(name, f"tensor_content has {len(content)} bytes, expected "
                                 f"{elements} elements × {dtype.itemsize} = {expected}")
            if dtype.name == "DT_BOOL" and content.translate(None, b"\x00\x01"):
                raise _bad(name, "bool tensor_content holds bytes other than 0 and 1")
        else:
            string_bytes, max_string = _string_content(name, content, elements)
    elif values:
        key, value = values[0]
        for other, _ in values:
            if other != dtype.field:
                raise _bad(name, f"{other} does not belong to dtype {dtype.name} "
                                 f"(it reads {dtype.field})")
        count = len(value)
        if dtype.pairs:
            if count % 2:
                raise _bad(name, f"{key} has an odd number of values ({count})")
            count //= 2
        if count != elements and (count != 1 or elements == 0):
            if count > elements:
                raise _bad(name, f"{count} values > {elements} elements")
            raise _bad(name, f"{count} values for {elements} elements (send all "
                             f"{elements}, exactly 1 to repeat, or none)")
        if not dtype.itemsize:
            if count == 1:
                max_string = len(value[0])
                string_bytes = max_string * elements
            else:
                lengths = [len(s) for s in value]
                string_bytes, max_string = sum(lengths), max(lengths)
    decoded = elements * dtype.itemsize if dtype.itemsize else (
        TSTRING_BYTES * elements + string_bytes)
    return TensorFacts(name=name, dtype=dtype_number, shape=shape, elements=elements,
                       decoded_bytes=decoded, max_string_bytes=max_string,
                       string_bytes=string_bytes)


def _dtype_problem(number: int) -> str:
    if number in NEVER_ALLOWED:
        return f"dtype {NEVER_ALLOWED[number]} is never accepted"
    if number > REF_OFFSET and name_of(number).endswith("_REF"):
        return f"reference dtype {name_of(number)} is never accepted"
    return f"unknown dtype {number}"


def _shape(name: str, shape_msg: TensorShapeProto) -> tuple[int, ...]:
    reject_unknown_fields(shape_msg, lambda: f"{label(name)}.tensor_shape")
    if shape_msg.unknown_rank:
        raise _bad(name, "unknown_rank is set (a request must give its shape)")
    dims = shape_msg.dim
    if len(dims) > MAX_RANK:
        raise _bad(name, f"rank {len(dims)} > {MAX_RANK}")
    sizes: list[int] = []
    for dim in dims:  # one pass: each element access builds a wrapper object
        size = dim.size
        if size < 0:
            raise _bad(name, f"negative dimension {size} at dim[{len(sizes)}]")
        if len(UnknownFieldSet(dim)):
            reject_unknown_fields(dim, f"{label(name)}.tensor_shape.dim[{len(sizes)}]")
        sizes.append(size)
    return tuple(sizes)


def _elements(name: str, shape: tuple[int, ...]) -> int:
    """N; refuses shapes whose non-zero dims overflow int64 even when a 0 dim hides it."""
    product, zero = 1, False
    for size in shape:
        if size == 0:
            zero = True
            continue
        product *= size
        if product > INT64_MAX:
            raise _bad(name, "element count overflows int64")
    return 0 if zero else product


def _string_content(name: str, content: bytes, n: int) -> tuple[int, int]:
    """Check DT_STRING tensor_content as TF decodes it (all varint32 lengths, then all
    bytes; DecodeStringList): exactly n lengths whose sum is the rest. Returns (sum, max).

    Every length takes at least one byte, so n > len(content) is refused before any work
    (shape [1e9] with a 1-byte content must not cost anything). Lengths under 128 (one
    byte each, the common case) are summed in C; others are decoded one by one.
    """
    if n > len(content):
        raise _bad(name, f"tensor_content of {len(content)} bytes cannot hold "
                         f"{n} string lengths")
    prefix = content[:n]
    if prefix.isascii():
        end, total, longest = n, sum(prefix), max(prefix, default=0)
    else:
        end, total, longest = _varint32_lengths(name, content, n)
    rest = len(content) - end
    if total != rest:
        raise _bad(name, f"string lengths add up to {total} bytes but {rest} follow")
    return total, longest


def _varint32_lengths(name: str, content: bytes, n: int) -> tuple[int, int, int]:
    """The n lengths when some take several bytes. Runs of 1-byte lengths between them
    are found and summed in C; only multi-byte ones are decoded here. A multi-byte length
    must be >= 128 (TF's encoder never writes a longer form than needed), so each one
    stands for at least 128 string bytes and there are at most len(content) / 128 of
    them: millions of lengths cost C speed, not a Python step each. Every multi-byte
    length is longer than any 1-byte one, so the longest is among them."""
    pos, count, total, longest, size = 0, 0, 0, 0, len(content)
    while count < n:
        high = _next_high(content, pos, min(size, pos + n - count))
        total += sum(content[pos:high])
        count, pos = count + high - pos, high
        if count == n:
            break
        value, shift = 0, 0
        while True:  # core::GetVarint32: at most 5 bytes, high bits past 32 dropped
            if pos >= size or shift > 28:
                raise _bad(name, "tensor_content has a bad string length")
            byte = content[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        value &= _UINT32
        if value < 0x80:
            raise _bad(name, "tensor_content has an overlong string length")
        total, longest, count = total + value, max(longest, value), count + 1
        if total > size:
            raise _bad(name, f"string lengths add up to more than the {size} bytes "
                             "of tensor_content")
    if not longest:  # no multi-byte length: only 1-byte ones
        longest = max(content[:pos], default=0)
    return pos, total, longest


def _next_high(content: bytes, pos: int, end: int) -> int:
    """Where the first byte >= 0x80 of content[pos:end] is, or `end`: slices tested
    with isascii (C, a word at a time), doubling then halving, instead of a byte loop."""
    step = 64
    while pos < end:
        stop = min(end, pos + step)
        if not content[pos:stop].isascii():
            while stop - pos > 64:
                middle = (pos + stop) // 2
                if content[pos:middle].isascii():
                    pos = middle
                else:
                    stop = middle
            return next(i for i in range(pos, stop) if content[i] >= 0x80)
        pos, step = stop, step * 2
    return end
