"""Inspect distributed-TF requests (`tf.distribute.Server`): bytes -> `ClusterFacts`.

`METHODS` maps each method path of WorkerService, MasterService, EagerService and
CoordinationService to its call kind and its inspector. Worker and Master paths are the
`/tensorflow.` ones the servers register, not the `/tensorflow.grpc.` a stub compiled
from their .proto would call. ProfilerService is not here: it stays refused. A
streaming method's inspector takes one request message at a time.

Every inspector is pure: it parses with protobuf's merge rules (repeated fields
concatenate across occurrences, so an op in a second `graph_def` is still found),
refuses unknown fields anywhere in the parsed tree, and raises only `Reject`:
`malformed(...)` for what TF could not run either (bad bytes, recursion, a call to a
function nothing defines), RESOURCE_EXHAUSTED `limit-exceeded` past a bound.

The facts (see facts.py):
- `ops`: every op type the request would run, once each, with where it was first seen;
- `function_refs`: functions called but not defined here (registered earlier, or not);
- `defines`: functions the request defines (an eager RegisterFunction keeps them);
- `addresses`: every host:port of a cluster definition the server would dial;
- `handles`: bearer capabilities (context, session, graph, callable, partial_run, step,
  container, collective keys, coordination tasks/keys/barriers, a function an eager
  RemoveFunction names), created or used;
  a primary handle is reported even when empty or 0 (TF's shared legacy session is "");
- `debug_urls` and `settings`: things a policy refuses;
- `tensors`: what each tensor the request carries decodes to (proxy/inspect/tensors.py).
`response_handles(path, data)` reads the handle a server hands out in a response.
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf import message as _message

from proxy.errors import malformed
from proxy.inspect.distributed import coordination, eager, master, worker
from proxy.inspect.distributed.facts import (
    Address,
    ClusterFacts,
    DebugUrl,
    FunctionRef,
    Handle,
    OpUse,
    Setting,
)

__all__ = ["METHODS", "Address", "ClusterFacts", "DebugUrl", "FunctionRef", "Handle", "OpUse",
           "Setting", "response_handles"]

Inspector = Callable[[bytes], ClusterFacts]
UNARY = "unary_unary"

_WORKER = {
    "GetStatus": worker.get_status,
    "CreateWorkerSession": worker.create_worker_session,
    "DeleteWorkerSession": worker.delete_worker_session,
    "RegisterGraph": worker.register_graph,
    "DeregisterGraph": worker.deregister_graph,
    "RunGraph": worker.run_graph,
    "CleanupGraph": worker.cleanup_graph,
    "CleanupAll": worker.cleanup_all,
    "RecvTensor": worker.recv_tensor,
    "RecvBuf": worker.recv_buf,
    "Logging": worker.logging,
    "Tracing": worker.tracing,
    "CompleteGroup": worker.complete_group,
    "CompleteInstance": worker.complete_instance,
    "GetStepSequence": worker.get_step_sequence,
    "MarkRecvFinished": worker.mark_recv_finished,
}
_MASTER = {
    "CreateSession": master.create_session,
    "ExtendSession": master.extend_session,
    "PartialRunSetup": master.partial_run_setup,
    "RunStep": master.run_step,
    "CloseSession": master.close_session,
    "ListDevices": master.list_devices,
    "Reset": master.reset,
    "MakeCallable": master.make_callable,
    "RunCallable": master.run_callable,
    "ReleaseCallable": master.release_callable,
}
_EAGER = {
    "CreateContext": eager.create_context,
    "UpdateContext": eager.update_context,
    "Enqueue": eager.enqueue,
    "StreamingEnqueue": eager.enqueue,  # bidi: each request message is an EnqueueRequest
    "WaitQueueDone": eager.wait_queue_done,
    "RunComponentFunction": eager.run_component_function,
    "KeepAlive": eager.keep_alive,
    "CloseContext": eager.close_context,
}
_STREAMING = {"/tensorflow.eager.EagerService/StreamingEnqueue": "stream_stream"}

METHODS: dict[str, tuple[str, Inspector]] = {
    path: (_STREAMING.get(path, UNARY), inspector)
    for prefix, table in (("/tensorflow.WorkerService/", _WORKER),
                          ("/tensorflow.MasterService/", _MASTER),
                          ("/tensorflow.eager.EagerService/", _EAGER),
                          ("/tensorflow.CoordinationService/", coordination.INSPECTORS))
    for name, inspector in table.items()
    for path in [prefix + name]
}

_RESPONSES: dict[str, Callable[[bytes], tuple[Handle, ...]]] = {
    **{"/tensorflow.MasterService/" + k: v for k, v in master.RESPONSE_HANDLES.items()},
    **{"/tensorflow.WorkerService/" + k: v for k, v in worker.RESPONSE_HANDLES.items()},
}


def response_handles(path: str, data: bytes) -> tuple[Handle, ...]:
    """Handles the server created in its response to `path` (empty for other methods):
    CreateSession's session, RegisterGraph's graph, MakeCallable's callable (numbered
    per session) and PartialRunSetup's partial run."""
    read = _RESPONSES.get(path)
    if read is None:
        return ()
    try:
        return read(data)
    except _message.DecodeError:
        raise malformed("response is not valid protobuf") from None
