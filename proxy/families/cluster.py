"""The distributed TF runtime (`tf.distribute.Server`): WorkerService, MasterService,
EagerService and CoordinationService, from the inspector's `METHODS` table
(proxy/inspect/distributed, docs/wire-facts.md §5).

Every request becomes `Facts(cluster=ClusterFacts)`: the ops it would run, the functions
it defines or calls, the cluster addresses the server would dial, the handles it
creates or uses. Policy judges the ops, addresses and debug URLs (`cluster_policy.py`);
`cluster_guard.py` binds handles and functions to the principal that created them.
`StreamingEnqueue` is the only streaming method (bidi): each of its messages is one
EnqueueRequest, inspected before it is forwarded. ProfilerService is never in this
family, so it stays refused (routing.ALWAYS_DENIED).

Methods with server-wide effect are ADMIN (a rule must name them; no glob grants them):
`MasterService/Reset` closes every session of the master and clears resource
containers, `WorkerService/CleanupAll` clears containers of every tenant,
`WorkerService/Logging` and `Tracing` switch the worker's RPC logging and tracing.
"""

from __future__ import annotations

from collections.abc import Callable

from proxy.call import Facts
from proxy.families import Access, Family, Kind, Method, family
from proxy.inspect.distributed import METHODS, ClusterFacts

NAME = "cluster"

ADMIN = frozenset({
    "/tensorflow.MasterService/Reset",
    "/tensorflow.WorkerService/CleanupAll",
    "/tensorflow.WorkerService/Logging",
    "/tensorflow.WorkerService/Tracing",
})


def _facts(inspector: Callable[[bytes], ClusterFacts]) -> Callable[[bytes], Facts]:
    def inspect(data: bytes) -> Facts:
        return Facts(cluster=inspector(data))
    inspect.__name__ = inspector.__name__
    return inspect


def _method(path: str, kind: str, inspector: Callable[[bytes], ClusterFacts]) -> Method:
    access = Access.ADMIN if path in ADMIN else Access.INFRA
    return Method(path, access, Kind(kind), _facts(inspector))


CLUSTER: Family = family(NAME, tuple(
    _method(path, kind, inspector) for path, (kind, inspector) in sorted(METHODS.items())))
