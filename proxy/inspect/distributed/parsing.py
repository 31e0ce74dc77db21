"""Parse one distributed-TF request with the server's merge rules, refusing what we
cannot judge: bytes that are not the message, and fields our schema lacks anywhere in
the parsed tree (a newer server might act on them unchecked)."""

from __future__ import annotations

from typing import TypeVar

from google.protobuf import message as _message
from google.protobuf import unknown_fields

from proxy.errors import malformed
from proxy.inspect.wire import MAX_FIELDS, check_field_count

# Requests that carry graphs or function libraries may hold more protobuf fields than
# the proxy-wide MAX_FIELDS: a real node costs 5-20 fields (name, op, inputs, attrs), so
# a 100k-node training graph needs about a million. Parse cost grows with the count
# (see docs/wire-facts.md for the measurement).
MAX_GRAPH_FIELDS = 2_000_000

M = TypeVar("M", bound=_message.Message)


def parse(cls: type[M], data: bytes, max_fields: int = MAX_FIELDS) -> M:
    # Each field takes at least two bytes, so a shorter request cannot pass the cap.
    if len(data) > 2 * max_fields or max_fields == MAX_FIELDS:
        check_field_count(data, cls.DESCRIPTOR, max_fields)
    try:
        msg = cls.FromString(data)
    except _message.DecodeError:
        raise malformed(f"request is not a valid {cls.DESCRIPTOR.name}") from None
    top = unknown_fields.UnknownFieldSet(msg)
    if len(top):
        raise malformed(f"{cls.DESCRIPTOR.name}: unknown field number {top[0].field_number}")
    # Unknown fields deeper down count towards ByteSize; dropping them (in C, over the
    # whole tree) changes it exactly when there were some.
    size = msg.ByteSize()
    msg.DiscardUnknownFields()
    if msg.ByteSize() != size:
        raise malformed(f"{cls.DESCRIPTOR.name}: unknown field inside the request")
    return msg
