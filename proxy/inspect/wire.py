"""Checks shared by the inspectors that look at protobuf messages as parsed."""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf import message as _message
from google.protobuf import unknown_fields

from proxy.errors import malformed


def reject_unknown_fields(msg: _message.Message, where: str | Callable[[], str]) -> None:
    """Refuse fields our schema lacks: a newer server might act on them unchecked.
    `where` may be a function, so hot paths build the text only when refusing."""
    unknown = unknown_fields.UnknownFieldSet(msg)
    if len(unknown):
        place = where if isinstance(where, str) else where()
        raise malformed(f"{place}: unknown field number {unknown[0].field_number}")
