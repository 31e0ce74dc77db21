"""The real TF 2.21 descriptors of the distributed runtime's messages, for tests.

The TensorFlow wheel ships Python modules for graph.proto, config.proto and friends, but
not for master.proto, worker.proto, eager_service.proto or coordination_service.proto:
their descriptors exist only as serialized `FileDescriptorProto`s compiled into the
shared libraries. `real_pool()` cuts those out of the installed libraries (a serialized
file descriptor starts with field 1, the file's name) and loads them, with the Python
modules' files they import, into a private descriptor pool. Importing this module
imports TensorFlow.
"""

from __future__ import annotations

import functools
import mmap
import pathlib

import tensorflow as tf  # registers TF's own files in the default descriptor pool
from google.protobuf import descriptor_pb2, descriptor_pool

# file name -> the library that embeds it
COMPILED_ONLY = {
    "tensorflow/core/protobuf/master.proto": "libtensorflow_cc.so.2",
    "tensorflow/core/protobuf/worker.proto": "libtensorflow_cc.so.2",
    "tensorflow/core/protobuf/eager_service.proto": "libtensorflow_cc.so.2",
    "xla/tsl/protobuf/coordination_service.proto": "libtensorflow_framework.so.2",
}
# FileDescriptorProto field number -> wire type, to find where a serialized one ends.
_FILE_FIELDS = {1: 2, 2: 2, 3: 2, 4: 2, 5: 2, 6: 2, 7: 2, 8: 2, 9: 2, 10: 0, 11: 0, 12: 2,
                13: 0, 14: 0, 15: 2}


def _varint(data: mmap.mmap, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, pos


def _extent(data: mmap.mmap, start: int) -> bytes:
    """The longest run of fields a FileDescriptorProto may have, from `start`."""
    pos = start
    while pos < len(data):
        key, after = _varint(data, pos)
        if _FILE_FIELDS.get(key >> 3) != key & 7:
            break
        length, after = _varint(data, after)
        pos = after + (length if key & 7 == 2 else 0)
    return bytes(data[start:pos])


def _carve(library: pathlib.Path, name: str) -> descriptor_pb2.FileDescriptorProto:
    marker = b"\n" + bytes([len(name)]) + name.encode()
    with library.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        at = data.find(marker)
        while at >= 0:
            proto = descriptor_pb2.FileDescriptorProto()
            try:
                proto.ParseFromString(_extent(data, at))
            except Exception:  # noqa: BLE001  (a string that merely looks like the name)
                proto.Clear()
            if proto.message_type:
                return proto
            at = data.find(marker, at + 1)
    raise LookupError(f"{name} is not compiled into {library}")


def _add_with_imports(pool: descriptor_pool.DescriptorPool, name: str, added: set[str],
                      carved: dict[str, descriptor_pb2.FileDescriptorProto]) -> None:
    if name in added:
        return
    if name in carved:
        proto = carved[name]
    else:
        proto = descriptor_pb2.FileDescriptorProto()
        descriptor_pool.Default().FindFileByName(name).CopyToProto(proto)
    for dependency in proto.dependency:
        _add_with_imports(pool, dependency, added, carved)
    pool.Add(proto)
    added.add(name)


@functools.cache
def real_pool() -> descriptor_pool.DescriptorPool:
    """A pool holding TF 2.21's master, worker, eager and coordination files and imports."""
    from tensorflow.core.framework import device_attributes_pb2, step_stats_pb2  # noqa: F401
    from tensorflow.core.protobuf import (  # noqa: F401
        error_codes_pb2,
        named_tensor_pb2,
        remote_tensor_handle_pb2,
        tensorflow_server_pb2,
    )
    root = pathlib.Path(tf.__file__).parent
    carved = {name: _carve(root / lib, name) for name, lib in COMPILED_ONLY.items()}
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()
    for name in carved:
        _add_with_imports(pool, name, added, carved)
    return pool
