"""Build distributed-TF request bytes for tests, the way a TF peer sends them.

`Protos("tf")` gives TensorFlow's own generated classes (GraphDef, FunctionDef,
AttrValue, ConfigProto, ServerDef, ...); `Protos("ours")` gives ours, for runs without
TensorFlow. Request messages have no TF Python class (master/worker/eager protos are not
shipped), so the request layer is encoded here field by field, embedding the inner
messages' own serialization unchanged.
"""

from __future__ import annotations

import struct
from typing import Any


class Protos:
    """One namespace of message classes, TensorFlow's or ours."""

    def __init__(self, source: str) -> None:
        self.source = source
        if source == "tf":
            from tensorflow.core.framework import (
                attr_value_pb2,
                function_pb2,
                graph_pb2,
                node_def_pb2,
            )
            from tensorflow.core.protobuf import (
                cluster_pb2,
                config_pb2,
                debug_pb2,
                tensorflow_server_pb2,
            )
            graph, node, attr, func = graph_pb2, node_def_pb2, attr_value_pb2, function_pb2
            config, cluster, debug, server = config_pb2, cluster_pb2, debug_pb2, tensorflow_server_pb2
        else:
            from proxy.pb import distributed_config_pb2, distributed_graph_pb2
            graph = node = attr = func = distributed_graph_pb2
            config = cluster = debug = server = distributed_config_pb2
        self.GraphDef = graph.GraphDef
        self.NodeDef = node.NodeDef
        self.AttrValue = attr.AttrValue
        self.NameAttrList = attr.NameAttrList
        self.FunctionDef = func.FunctionDef
        self.FunctionDefLibrary = func.FunctionDefLibrary
        self.ConfigProto = config.ConfigProto
        self.RunOptions = config.RunOptions
        self.CallableOptions = config.CallableOptions
        self.ClusterDef = cluster.ClusterDef
        self.DebugOptions = debug.DebugOptions
        self.ServerDef = server.ServerDef

    # -- graph pieces -----------------------------------------------------------------------

    def node(self, name: str, op: str, **attrs: Any) -> Any:
        n = self.NodeDef(name=name, op=op)
        for key, value in attrs.items():
            n.attr[key].CopyFrom(value)
        return n

    def s(self, value: bytes) -> Any:
        return self.AttrValue(s=value)

    def func(self, name: str, **attrs: Any) -> Any:
        value = self.AttrValue()
        value.func.name = name
        for key, attr in attrs.items():
            value.func.attr[key].CopyFrom(attr)
        return value

    def funcs(self, *names: str) -> Any:
        value = self.AttrValue()
        for name in names:
            value.list.func.add(name=name)
        return value

    def function(self, name: str, *nodes: Any) -> Any:
        f = self.FunctionDef()
        f.signature.name = name
        f.node_def.extend(nodes)
        return f

    def graph(self, nodes: Any = (), functions: Any = (),
              gradients: tuple[tuple[str, str], ...] = ()) -> Any:
        g = self.GraphDef()
        g.node.extend(nodes)
        g.library.function.extend(functions)
        for forward, gradient in gradients:
            g.library.gradient.add(function_name=forward, gradient_func=gradient)
        return g

    def cluster(self, jobs: dict[str, list[str]]) -> Any:
        c = self.ClusterDef()
        for name, addresses in jobs.items():
            job = c.job.add(name=name)
            for i, address in enumerate(addresses):
                job.tasks[i] = address
        return c

    def debug_watch(self, ops: list[str], urls: list[str]) -> Any:
        options = self.DebugOptions()
        watch = options.debug_tensor_watch_opts.add(node_name="x")
        watch.debug_ops.extend(ops)
        watch.debug_urls.extend(urls)
        return options


# -- wire encoding ---------------------------------------------------------------------------

def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def ld(number: int, payload: bytes | Any) -> bytes:
    """A length-delimited field; a message is serialized first."""
    data = payload if isinstance(payload, bytes) else payload.SerializeToString()
    return varint(number << 3 | 2) + varint(len(data)) + data


def vi(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def f64(number: int, value: int) -> bytes:
    return varint(number << 3 | 1) + struct.pack("<Q", value)


def _entry(key: str, value: Any) -> bytes:
    return ld(1, key.encode()) + ld(2, value)


# -- requests ---------------------------------------------------------------------------------

def create_session(graph: Any, config: Any = None) -> bytes:
    return ld(1, graph) + (ld(2, config) if config is not None else b"")


def extend_session(handle: str, graph: Any) -> bytes:
    return ld(1, handle.encode()) + ld(2, graph)


def register_graph(handle: str, graph: Any, debug_options: Any = None,
                   config: Any = None, *, in_session: bool = True) -> bytes:
    """As a master sends it: `create_worker_session_called` set (field 6), so the worker
    registers the graph in the named session, not its legacy one."""
    out = ld(1, handle.encode()) + (vi(6, 1) if in_session else b"") + ld(2, graph)
    if debug_options is not None:
        out += ld(5, debug_options)
    return out + (ld(8, config) if config is not None else b"")


def run_step(handle: str, options: Any = None, partial: str = "") -> bytes:
    out = ld(1, handle.encode()) + (ld(5, options) if options is not None else b"")
    return out + (ld(6, partial.encode()) if partial else b"")


def make_callable(handle: str, callable_options: Any) -> bytes:
    return ld(1, handle.encode()) + ld(2, callable_options)


def create_worker_session(handle: str, server_def: Any, master_task: str = "",
                          incarnation: int = 0) -> bytes:
    out = ld(1, handle.encode()) + ld(2, server_def)
    return out + (ld(5, master_task.encode()) + vi(6, incarnation) if master_task else b"")


def create_context(context_id: int, server_def: Any = None, clear: bool = False) -> bytes:
    out = (ld(1, server_def) if server_def is not None else b"") + f64(7, context_id)
    return out + (vi(10, 1) if clear else b"")


def operation(name: str, attrs: dict[str, Any] | None = None, *, op_id: int = 1,
              is_function: bool = False, component: bool = False) -> bytes:
    out = vi(1, op_id) + ld(2, name.encode())
    for key, value in (attrs or {}).items():
        out += ld(5, _entry(key, value))
    if component:
        out += vi(7, 1)
    return out + (vi(9, 1) if is_function else b"")


def op_item(name: str, attrs: dict[str, Any] | None = None, **kw: Any) -> bytes:
    return ld(2, operation(name, attrs, **kw))


def register_item(function_def: Any, library: Any = None) -> bytes:
    return ld(4, ld(1, function_def) + (ld(3, library) if library is not None else b""))


def remove_item(name: str) -> bytes:
    return ld(8, ld(1, name.encode()))


def enqueue(context_id: int, *items: bytes) -> bytes:
    return f64(1, context_id) + b"".join(ld(3, item) for item in items)


def run_component_function(context_id: int, name: str) -> bytes:
    return f64(1, context_id) + ld(2, operation(name, component=True, is_function=True))
