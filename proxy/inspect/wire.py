"""Checks shared by the inspectors that look at protobuf messages as parsed."""

from __future__ import annotations

import functools
from collections.abc import Callable

from google.protobuf import message as _message
from google.protobuf import unknown_fields
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from proxy.errors import Reason, Reject, malformed


def reject_unknown_fields(msg: _message.Message, where: str | Callable[[], str]) -> None:
    """Refuse fields our schema lacks: a newer server might act on them unchecked.
    `where` may be a function, so hot paths build the text only when refusing."""
    unknown = unknown_fields.UnknownFieldSet(msg)
    if len(unknown):
        place = where if isinstance(where, str) else where()
        raise malformed(f"{place}: unknown field number {unknown[0].field_number}")


# Parsing creates one object per sub-message and per repeated element, so a 32 MiB
# request of tiny map entries costs upb ~2.8 GB and seconds of CPU before any limit can
# look at it. A request may therefore hold at most this many protobuf fields; it is
# counted on the wire, following only the sub-message fields of our schema, before the
# parse. Each field takes at least 2 bytes, so smaller requests need no count at all.
MAX_FIELDS = 100_000
_COUNT_ABOVE_BYTES = 2 * MAX_FIELDS


@functools.cache
def _submessages(descriptor: Descriptor) -> dict[int, Descriptor]:
    return {f.number: f.message_type for f in descriptor.fields
            if f.type == FieldDescriptor.TYPE_MESSAGE}


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end and shift < 64:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise malformed("request is not valid protobuf")


def check_field_count(data: bytes, descriptor: Descriptor, limit: int = MAX_FIELDS) -> None:
    """Refuse a request with more than `limit` fields, without parsing it."""
    if len(data) <= _COUNT_ABOVE_BYTES and limit == MAX_FIELDS:
        return
    count = 0
    stack = [(0, len(data), descriptor)]
    while stack:
        pos, end, desc = stack.pop()
        nested = _submessages(desc)
        while pos < end:
            key, pos = _varint(data, pos, end)
            count += 1
            if count > limit:
                raise Reject(Reason.LIMIT_EXCEEDED,
                             f"request has more than {limit} protobuf fields")
            wire_type = key & 7
            if wire_type == 0:
                _, pos = _varint(data, pos, end)
            elif wire_type in (1, 5):
                pos += 8 if wire_type == 1 else 4
            elif wire_type == 2:
                length, pos = _varint(data, pos, end)
                if (sub := nested.get(key >> 3)) is not None:
                    stack.append((pos, pos + length, sub))
                pos += length
            else:
                raise malformed("request is not valid protobuf")
        if pos != end:
            raise malformed("request is not valid protobuf")
