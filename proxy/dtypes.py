"""TensorFlow DataType numbers: names, in-memory item sizes, and the `*_val` field each
dtype is read from (docs/wire-facts.md §2; the field table was checked against
TF 2.21's own parser, `tf.io.parse_tensor`). Plain values, no protobuf: `limits.py` and
the config use the names, `inspect/tensors.py` the sizes and fields.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DType:
    number: int
    name: str
    itemsize: int      # bytes per element once decoded; 0 for DT_STRING (see tensors.py)
    field: str         # the only `*_val` field TF reads for this dtype
    pairs: bool = False  # complex: two values per element


def _table() -> dict[int, DType]:
    rows = [
        (1, "DT_FLOAT", 4, "float_val"), (2, "DT_DOUBLE", 8, "double_val"),
        (3, "DT_INT32", 4, "int_val"), (4, "DT_UINT8", 1, "int_val"),
        (5, "DT_INT16", 2, "int_val"), (6, "DT_INT8", 1, "int_val"),
        (7, "DT_STRING", 0, "string_val"), (8, "DT_COMPLEX64", 8, "scomplex_val"),
        (9, "DT_INT64", 8, "int64_val"), (10, "DT_BOOL", 1, "bool_val"),
        (11, "DT_QINT8", 1, "int_val"), (12, "DT_QUINT8", 1, "int_val"),
        (13, "DT_QINT32", 4, "int_val"), (14, "DT_BFLOAT16", 2, "half_val"),
        (15, "DT_QINT16", 2, "int_val"), (16, "DT_QUINT16", 2, "int_val"),
        (17, "DT_UINT16", 2, "int_val"), (18, "DT_COMPLEX128", 16, "dcomplex_val"),
        (19, "DT_HALF", 2, "half_val"),
        (22, "DT_UINT32", 4, "uint32_val"), (23, "DT_UINT64", 8, "uint64_val"),
        (24, "DT_FLOAT8_E5M2", 1, "float8_val"), (25, "DT_FLOAT8_E4M3FN", 1, "float8_val"),
        (26, "DT_FLOAT8_E4M3FNUZ", 1, "float8_val"),
        (27, "DT_FLOAT8_E4M3B11FNUZ", 1, "float8_val"),
        (28, "DT_FLOAT8_E5M2FNUZ", 1, "float8_val"),
        # one byte per element in memory; int2/uint2 read int_val and float4 reads
        # float8_val (checked with tf.io.parse_tensor, TF 2.21)
        (29, "DT_INT4", 1, "int_val"), (30, "DT_UINT4", 1, "int_val"),
        (31, "DT_INT2", 1, "int_val"), (32, "DT_UINT2", 1, "int_val"),
        (33, "DT_FLOAT4_E2M1FN", 1, "float8_val"),
    ]
    return {n: DType(n, name, size, field, pairs=field in ("scomplex_val", "dcomplex_val"))
            for n, name, size, field in rows}


# The dtypes a request may carry at all. DT_INVALID (0), DT_RESOURCE (20), DT_VARIANT (21)
# and the reference types (>= 101) are absent: no configuration can allow them.
DTYPES: dict[int, DType] = _table()
BY_NAME: dict[str, DType] = {d.name: d for d in DTYPES.values()}
NEVER_ALLOWED: dict[int, str] = {0: "DT_INVALID", 20: "DT_RESOURCE", 21: "DT_VARIANT"}
REF_OFFSET = 100  # DT_FLOAT_REF = 101 ... every value >= 101 is a reference type

# Allowed by default: the dtypes real models take as inputs. Quantized, float8, int4/int2
# and float4 are off unless a config lists them (docs/wire-facts.md §2.3).
DEFAULT_ALLOWED = ("DT_FLOAT", "DT_DOUBLE", "DT_HALF", "DT_BFLOAT16", "DT_INT8", "DT_INT16",
                   "DT_INT32", "DT_INT64", "DT_UINT8", "DT_UINT16", "DT_UINT32", "DT_UINT64",
                   "DT_BOOL", "DT_STRING", "DT_COMPLEX64", "DT_COMPLEX128")


def name_of(number: int) -> str:
    """A readable name for any dtype number, valid or not."""
    if number in DTYPES:
        return DTYPES[number].name
    if number in NEVER_ALLOWED:
        return NEVER_ALLOWED[number]
    base = number - REF_OFFSET
    if base in DTYPES or base in NEVER_ALLOWED:
        return name_of(base) + "_REF"
    return f"dtype {number}"
