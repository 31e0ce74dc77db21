"""CoordinationService requests: no graphs, but self-declared task identities
(`task`: "job/index"), incarnations, key-value keys and barrier ids, each reported as a
handle so that a stateful layer can bind them to the principal that first used them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from proxy.inspect.distributed.facts import ClusterFacts, Collector
from proxy.inspect.distributed.parsing import parse
from proxy.pb import distributed_coordination_pb2 as pb


def _task(col: Collector, task: pb.CoordinatedTask, where: str, creates: bool = False) -> None:
    col.handle("task", f"{task.job_name}/{task.task_id}", creates, where)


def _tasks(col: Collector, tasks: Any, where: str) -> None:
    for i, task in enumerate(tasks):
        _task(col, task, f"{where}[{i}]")


def _inspector(cls: type, facts: Callable[[Collector, Any], None]) -> Callable[[bytes], ClusterFacts]:
    def inspect(data: bytes) -> ClusterFacts:
        col = Collector()
        facts(col, parse(cls, data))
        return col.facts()
    inspect.__name__ = cls.__name__
    return inspect


def _register(col: Collector, m: Any) -> None:
    _task(col, m.source_task, "source_task", creates=True)
    col.handle("incarnation", m.incarnation, True, "incarnation")


def _heartbeat(col: Collector, m: Any) -> None:
    _task(col, m.source_task, "source_task")
    col.handle("incarnation", m.incarnation, False, "incarnation")


def _source(col: Collector, m: Any) -> None:
    _task(col, m.source_task, "source_task")


def _key(kind: str, field: str, creates: bool) -> Callable[[Collector, Any], None]:
    return lambda col, m: col.handle(kind, getattr(m, field), creates, field)


def _delete(col: Collector, m: Any) -> None:
    col.handle("kv_dir" if m.is_directory else "kv_key", m.key, False, "key")


def _insert(col: Collector, m: Any) -> None:
    col.handle("kv_key", m.kv.key, True, "kv.key")


def _barrier(col: Collector, m: Any) -> None:
    col.handle("barrier", m.barrier_id, True, "barrier_id")
    _task(col, m.source_task, "source_task")
    _tasks(col, m.tasks, "tasks")


def _cancel_barrier(col: Collector, m: Any) -> None:
    col.handle("barrier", m.barrier_id, False, "barrier_id")
    _task(col, m.source_task, "source_task")


def _alive(col: Collector, m: Any) -> None:
    _task(col, m.requesting_task, "requesting_task")
    _tasks(col, m.tasks, "tasks")


def _nothing(col: Collector, m: Any) -> None:
    return None


INSPECTORS: dict[str, Callable[[bytes], ClusterFacts]] = {
    "RegisterTask": _inspector(pb.RegisterTaskRequest, _register),
    "Heartbeat": _inspector(pb.HeartbeatRequest, _heartbeat),
    "WaitForAllTasks": _inspector(pb.WaitForAllTasksRequest, _source),
    "ShutdownTask": _inspector(pb.ShutdownTaskRequest, _source),
    "ResetTask": _inspector(pb.ResetTaskRequest, _source),
    "ReportErrorToTask": _inspector(pb.ReportErrorToTaskRequest, _nothing),
    "ReportErrorToService": _inspector(
        pb.ReportErrorToServiceRequest,
        lambda col, m: _task(col, m.error_origin, "error_origin")),
    "GetTaskState": _inspector(pb.GetTaskStateRequest,
                               lambda col, m: _tasks(col, m.source_task, "source_task")),
    "WatchJobState": _inspector(pb.WatchJobStateRequest, _nothing),
    "InsertKeyValue": _inspector(pb.InsertKeyValueRequest, _insert),
    "GetKeyValue": _inspector(pb.GetKeyValueRequest, _key("kv_key", "key", False)),
    "TryGetKeyValue": _inspector(pb.TryGetKeyValueRequest, _key("kv_key", "key", False)),
    "IncrementKeyValue": _inspector(pb.IncrementKeyValueRequest, _key("kv_key", "key", True)),
    "GetKeyValueDir": _inspector(pb.GetKeyValueDirRequest,
                                 _key("kv_dir", "directory_key", False)),
    "DeleteKeyValue": _inspector(pb.DeleteKeyValueRequest, _delete),
    "Barrier": _inspector(pb.BarrierRequest, _barrier),
    "CancelBarrier": _inspector(pb.CancelBarrierRequest, _cancel_barrier),
    "GetAliveTasks": _inspector(pb.GetAliveTasksRequest, _alive),
    "PollForError": _inspector(pb.PollForErrorRequest, _source),
}
