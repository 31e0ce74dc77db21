"""WorkerService requests: what a master (or a peer worker) asks of a worker, one
function per method, bytes -> ClusterFacts.

Handles: a worker session (`session`, created by CreateWorkerSession; the empty handle
is the worker's shared legacy session), a registered graph (`graph`, handed out in
RegisterGraph's response), a step (`step`, started by RunGraph, then named by every
RecvTensor, RecvBuf and CleanupGraph of that step), collective group and instance keys,
graph keys and resource containers.

RegisterGraph, DeregisterGraph and RunGraph act in the named session only when their
`create_worker_session_called` is set; without it the worker uses its shared legacy
session whatever handle they name (docs/wire-facts.md §5.4), so they are reported as
naming the legacy session ("").
"""

from __future__ import annotations

from typing import Any

from proxy.inspect.distributed import cluster
from proxy.inspect.distributed.facts import ClusterFacts, Collector, Handle, quote
from proxy.inspect.distributed.graphs import walk_graph
from proxy.inspect.distributed.parsing import MAX_GRAPH_FIELDS, parse
from proxy.pb import distributed_worker_pb2 as pb


def get_status(data: bytes) -> ClusterFacts:
    parse(pb.GetStatusRequest, data)
    return ClusterFacts()


def create_worker_session(data: bytes) -> ClusterFacts:
    """The master names the session and hands over the cluster, which the worker dials."""
    msg = parse(pb.CreateWorkerSessionRequest, data)
    col = Collector()
    col.handle("session", msg.session_handle, True, "session_handle")
    if msg.master_task:
        # The worker deletes every session created under this master task with another
        # incarnation (it takes the master to have restarted): the task is the master's.
        col.handle("master_task", msg.master_task, True, "master_task")
    if msg.HasField("server_def"):
        cluster.server_def(col, msg.server_def, "server_def")
    return col.facts()


def _graph_session(col: Collector, msg: Any) -> None:
    if msg.create_worker_session_called:
        col.handle("session", msg.session_handle, False, "session_handle")
    else:
        col.handle("session", "", False, "session_handle, ignored: create_worker_session_called is false")


def delete_worker_session(data: bytes) -> ClusterFacts:
    msg = parse(pb.DeleteWorkerSessionRequest, data)
    col = Collector()
    col.handle("session", msg.session_handle, False, "session_handle")
    return col.facts()


def register_graph(data: bytes) -> ClusterFacts:
    """A partition of a session's graph. It legitimately holds _Send/_Recv/_Arg/_Retval,
    and the master copies in every function it needs: nothing earlier is looked up."""
    msg = parse(pb.RegisterGraphRequest, data, MAX_GRAPH_FIELDS)
    col = Collector()
    _graph_session(col, msg)
    walk_graph(col, msg.graph_def, "graph_def", closed=True)
    if msg.HasField("debug_options"):
        cluster.debug_options(col, msg.debug_options, "debug_options")
    if msg.HasField("config_proto"):
        cluster.config(col, msg.config_proto, "config_proto")
    return col.facts()


def deregister_graph(data: bytes) -> ClusterFacts:
    msg = parse(pb.DeregisterGraphRequest, data)
    col = Collector()
    _graph_session(col, msg)
    col.handle("graph", msg.graph_handle, False, "graph_handle")
    return col.facts()


def run_graph(data: bytes) -> ClusterFacts:
    msg = parse(pb.RunGraphRequest, data)
    col = Collector()
    _graph_session(col, msg)
    col.handle("graph", msg.graph_handle, False, "graph_handle")
    col.handle("step", msg.step_id, True, "step_id")
    for i, send in enumerate(msg.send):
        col.tensor(send.tensor, f"send[{i}] {quote(send.name)}")
    return col.facts()


def _step(cls: Any, data: bytes) -> ClusterFacts:
    msg = parse(cls, data)
    col = Collector()
    col.handle("step", msg.step_id, False, "step_id")
    return col.facts()


def cleanup_graph(data: bytes) -> ClusterFacts:
    return _step(pb.CleanupGraphRequest, data)


def recv_tensor(data: bytes) -> ClusterFacts:
    return _step(pb.RecvTensorRequest, data)


def recv_buf(data: bytes) -> ClusterFacts:
    """Also carries `buf_ptr`, a raw pointer into the caller's memory."""
    return _step(pb.RecvBufRequest, data)


def cleanup_all(data: bytes) -> ClusterFacts:
    """Clears the named resource containers (all tenants' variables in them)."""
    msg = parse(pb.CleanupAllRequest, data)
    col = Collector()
    for i, container in enumerate(msg.container):
        col.handle("container", container, False, f"container[{i}]")
    return col.facts()


def logging(data: bytes) -> ClusterFacts:
    """Switches RPC logging and returns the step stats of the named steps."""
    msg = parse(pb.LoggingRequest, data)
    col = Collector()
    for i, step in enumerate(msg.fetch_step_id):
        col.handle("step", step, False, f"fetch_step_id[{i}]")
    return col.facts()


def tracing(data: bytes) -> ClusterFacts:
    parse(pb.TracingRequest, data)
    return ClusterFacts()


def complete_group(data: bytes) -> ClusterFacts:
    msg = parse(pb.CompleteGroupRequest, data)
    col = Collector()
    col.handle("collective_group", msg.group_key, False, "group_key")
    return col.facts()


def complete_instance(data: bytes) -> ClusterFacts:
    msg = parse(pb.CompleteInstanceRequest, data)
    col = Collector()
    col.handle("collective_group", msg.group_key, False, "group_key")
    col.handle("collective_instance", msg.instance_key, False, "instance_key")
    col.handle("step", msg.step_id, False, "step_id")
    return col.facts()


def get_step_sequence(data: bytes) -> ClusterFacts:
    msg = parse(pb.GetStepSequenceRequest, data)
    col = Collector()
    for i, key in enumerate(msg.graph_key):
        col.handle("graph_key", key, False, f"graph_key[{i}]")
    return col.facts()


def mark_recv_finished(data: bytes) -> ClusterFacts:
    parse(pb.MarkRecvFinishedRequest, data)
    return ClusterFacts()


RESPONSE_HANDLES = {
    "RegisterGraph": lambda d: (
        Handle("graph", pb.RegisterGraphResponse.FromString(d).graph_handle, True,
               "graph_handle"),),
}
