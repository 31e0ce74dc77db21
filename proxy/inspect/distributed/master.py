"""MasterService requests (TF1 `tf.compat.v1.Session("grpc://...")`): one function per
method, bytes -> ClusterFacts. A session's handle is the bearer of everything done in
it; CreateSession's comes back in the response (see `response_handles`)."""

from __future__ import annotations

from typing import Any

from proxy.inspect.distributed import cluster
from proxy.inspect.distributed.facts import ClusterFacts, Collector, Handle, quote
from proxy.inspect.distributed.graphs import walk_graph
from proxy.inspect.distributed.parsing import MAX_GRAPH_FIELDS, parse
from proxy.pb import distributed_master_pb2 as pb


def create_session(data: bytes) -> ClusterFacts:
    """The client's whole graph, and a ConfigProto whose cluster_def the master dials.
    Nothing precedes it, so every function it calls must be in its own library."""
    msg = parse(pb.CreateSessionRequest, data, MAX_GRAPH_FIELDS)
    col = Collector()
    walk_graph(col, msg.graph_def, "graph_def", closed=True)
    if msg.HasField("config"):
        cluster.config(col, msg.config, "config")
    return col.facts()


def extend_session(data: bytes) -> ClusterFacts:
    """More nodes for a session's graph, which may call functions defined before."""
    msg = parse(pb.ExtendSessionRequest, data, MAX_GRAPH_FIELDS)
    col = Collector()
    col.handle("session", msg.session_handle, False, "session_handle")
    walk_graph(col, msg.graph_def, "graph_def", closed=False)
    return col.facts()


def _session_only(cls: Any, data: bytes) -> ClusterFacts:
    msg = parse(cls, data)
    col = Collector()
    col.handle("session", msg.session_handle, False, "session_handle")
    return col.facts()


def partial_run_setup(data: bytes) -> ClusterFacts:
    return _session_only(pb.PartialRunSetupRequest, data)


def close_session(data: bytes) -> ClusterFacts:
    return _session_only(pb.CloseSessionRequest, data)


def list_devices(data: bytes) -> ClusterFacts:
    """An empty session_handle lists every device of the cluster."""
    return _session_only(pb.ListDevicesRequest, data)


def run_step(data: bytes) -> ClusterFacts:
    msg = parse(pb.RunStepRequest, data)
    col = Collector()
    col.handle("session", msg.session_handle, False, "session_handle")
    if msg.partial_run_handle:
        col.handle("partial_run", msg.partial_run_handle, False, "partial_run_handle")
    for i, feed in enumerate(msg.feed):
        col.tensor(feed.tensor, f"feed[{i}] {quote(feed.name)}")
    if msg.HasField("options"):
        cluster.run_options(col, msg.options, "options")
    return col.facts()


def reset(data: bytes) -> ClusterFacts:
    """Closes every session of the master and clears the named resource containers."""
    msg = parse(pb.ResetRequest, data)
    col = Collector()
    for i, container in enumerate(msg.container):
        col.handle("container", container, False, f"container[{i}]")
    return col.facts()


def make_callable(data: bytes) -> ClusterFacts:
    msg = parse(pb.MakeCallableRequest, data)
    col = Collector()
    col.handle("session", msg.session_handle, False, "session_handle")
    if msg.options.HasField("run_options"):
        cluster.run_options(col, msg.options.run_options, "options.run_options")
    return col.facts()


def _callable(cls: Any, data: bytes) -> ClusterFacts:
    msg = parse(cls, data)
    col = Collector()
    col.handle("session", msg.session_handle, False, "session_handle")
    col.handle("callable", msg.handle, False, "handle")
    return col.facts()


def run_callable(data: bytes) -> ClusterFacts:
    msg = parse(pb.RunCallableRequest, data)
    col = Collector()
    col.handle("session", msg.session_handle, False, "session_handle")
    col.handle("callable", msg.handle, False, "handle")
    for i, tensor in enumerate(msg.feed):
        col.tensor(tensor, f"feed[{i}]")
    return col.facts()


def release_callable(data: bytes) -> ClusterFacts:
    return _callable(pb.ReleaseCallableRequest, data)


def _response(cls: Any, data: bytes, field: str, kind: str) -> tuple[Handle, ...]:
    msg = cls.FromString(data)
    return (Handle(kind, str(getattr(msg, field)), True, field),)


RESPONSE_HANDLES = {
    "CreateSession": lambda d: _response(pb.CreateSessionResponse, d, "session_handle",
                                         "session"),
    "PartialRunSetup": lambda d: _response(pb.PartialRunSetupResponse, d,
                                           "partial_run_handle", "partial_run"),
    "MakeCallable": lambda d: _response(pb.MakeCallableResponse, d, "handle", "callable"),
}
