"""EagerService requests (TF2 `tf.config.experimental_connect_to_cluster`): one function
per method, bytes -> ClusterFacts.

The client picks a random fixed64 `context_id` in CreateContext and names it in every
later call: it is the bearer of the context, of the functions registered in it and of
the tensors it holds. Functions registered by an earlier request of the same context
can be called by name, so calls to names this request does not define are reported
(`OpUse` at op positions, `FunctionRef` at function positions), never refused.
"""

from __future__ import annotations

from typing import Any

from proxy.inspect.distributed import cluster
from proxy.inspect.distributed.facts import ClusterFacts, Collector, quote
from proxy.inspect.distributed.graphs import Scope
from proxy.inspect.distributed.parsing import MAX_GRAPH_FIELDS, parse
from proxy.pb import distributed_eager_pb2 as pb


def _context(col: Collector, context_id: int, creates: bool = False) -> None:
    col.handle("context", context_id, creates, "context_id")


def create_context(data: bytes) -> ClusterFacts:
    """The client's cluster: the worker dials these addresses (peers and the client)."""
    msg = parse(pb.CreateContextRequest, data)
    col = Collector()
    _context(col, msg.context_id, creates=True)
    if msg.HasField("server_def"):
        cluster.server_def(col, msg.server_def, "server_def")
    if msg.clear_existing_contexts:
        col.setting("clear_existing_contexts", "true", "clear_existing_contexts")
    return col.facts()


def update_context(data: bytes) -> ClusterFacts:
    msg = parse(pb.UpdateContextRequest, data)
    col = Collector()
    _context(col, msg.context_id)
    if msg.HasField("server_def"):
        cluster.server_def(col, msg.server_def, "server_def")
    return col.facts()


def _queue_item(scope: Scope, item: pb.QueueItem, i: int) -> None:
    kind = item.WhichOneof("item")
    at = f"queue[{i}].{kind}"
    if kind == "operation":
        op = item.operation
        scope.operation(op, f"{at} {quote(op.name)}", before=i)
        _inputs(scope.col, op, at)
        if op.func_step_id:
            scope.col.handle("step", op.func_step_id, False, f"{at}.func_step_id")
    elif kind == "send_tensor":
        for j, tensor in enumerate(item.send_tensor.tensors):
            scope.col.tensor(tensor, f"{at}.tensors[{j}]")
    elif kind == "send_packed_handle":
        for j, handle in enumerate(item.send_packed_handle.handles):
            if handle.WhichOneof("item") == "local_handle":
                scope.col.tensor(handle.local_handle.tensor, f"{at}.handles[{j}]")
    elif kind == "register_function":
        reg = item.register_function
        scope.define(reg.function_def, f"{at}.function_def", order=i)
        scope.library(reg.library, f"{at}.library", order=i)
    elif kind == "remove_function":
        # Names a function of the context, as a handle: removing one only affects the
        # context's owner, and TF answers "not found" for a name it does not hold.
        name = item.remove_function.function_name
        scope.col.handle("function", name, False, f"{at} {quote(name)}")
    elif kind == "cleanup_function":
        scope.col.handle("step", item.cleanup_function.step_id, False, f"{at}.step_id")


def _inputs(col: Collector, op: pb.Operation, at: str) -> None:
    """Inputs sent by value (the others are handles of tensors already there)."""
    for j, given in enumerate(op.op_inputs):
        if given.WhichOneof("item") == "tensor":
            col.tensor(given.tensor, f"{at}.op_inputs[{j}]")


def enqueue(data: bytes) -> ClusterFacts:
    """Also one message of StreamingEnqueue. Items run in order: an operation can call a
    function registered by an earlier item, while function bodies are looked up only
    when called, so they may call any function of the request."""
    msg = parse(pb.EnqueueRequest, data, MAX_GRAPH_FIELDS)
    col = Collector()
    _context(col, msg.context_id)
    scope = Scope(col, closed=False)
    for i, item in enumerate(msg.queue):
        _queue_item(scope, item, i)
    scope.finish()
    return col.facts()


def run_component_function(data: bytes) -> ClusterFacts:
    """Runs one component of a multi-device function registered earlier."""
    msg = parse(pb.RunComponentFunctionRequest, data, MAX_GRAPH_FIELDS)
    col = Collector()
    _context(col, msg.context_id)
    scope = Scope(col, closed=False)
    op = msg.operation
    scope.operation(op, f"operation {quote(op.name)}", before=0)
    _inputs(col, op, "operation")
    if op.func_step_id:
        col.handle("step", op.func_step_id, False, "operation.func_step_id")
    scope.finish()
    return col.facts()


def wait_queue_done(data: bytes) -> ClusterFacts:
    return _context_only(pb.WaitQueueDoneRequest, data)


def keep_alive(data: bytes) -> ClusterFacts:
    return _context_only(pb.KeepAliveRequest, data)


def close_context(data: bytes) -> ClusterFacts:
    return _context_only(pb.CloseContextRequest, data)


def _context_only(cls: Any, data: bytes) -> ClusterFacts:
    msg = parse(cls, data)
    col = Collector()
    _context(col, msg.context_id)
    return col.facts()
