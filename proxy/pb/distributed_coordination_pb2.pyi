from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CoordinatedTask(_message.Message):
    __slots__ = ("job_name", "task_id", "recoverable")
    JOB_NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    RECOVERABLE_FIELD_NUMBER: _ClassVar[int]
    job_name: str
    task_id: int
    recoverable: bool
    def __init__(self, job_name: _Optional[str] = ..., task_id: _Optional[int] = ..., recoverable: _Optional[bool] = ...) -> None: ...

class KeyValueEntry(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: bytes
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...

class RegisterTaskRequest(_message.Message):
    __slots__ = ("incarnation", "source_task")
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TASK_FIELD_NUMBER: _ClassVar[int]
    incarnation: int
    source_task: CoordinatedTask
    def __init__(self, incarnation: _Optional[int] = ..., source_task: _Optional[_Union[CoordinatedTask, _Mapping]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("incarnation", "source_task")
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TASK_FIELD_NUMBER: _ClassVar[int]
    incarnation: int
    source_task: CoordinatedTask
    def __init__(self, incarnation: _Optional[int] = ..., source_task: _Optional[_Union[CoordinatedTask, _Mapping]] = ...) -> None: ...

class PollForErrorRequest(_message.Message):
    __slots__ = ("source_task",)
    SOURCE_TASK_FIELD_NUMBER: _ClassVar[int]
    source_task: CoordinatedTask
    def __init__(self, source_task: _Optional[_Union[CoordinatedTask, _Mapping]] = ...) -> None: ...

class WaitForAllTasksRequest(_message.Message):
    __slots__ = ("source_task", "device_info")
    SOURCE_TASK_FIELD_NUMBER: _ClassVar[int]
    DEVICE_INFO_FIELD_NUMBER: _ClassVar[int]
    source_task: CoordinatedTask
    device_info: bytes
    def __init__(self, source_task: _Optional[_Union[CoordinatedTask, _Mapping]] = ..., device_info: _Optional[bytes] = ...) -> None: ...

class ShutdownTaskRequest(_message.Message):
    __slots__ = ("source_task",)
    SOURCE_TASK_FIELD_NUMBER: _ClassVar[int]
    source_task: CoordinatedTask
    def __init__(self, source_task: _Optional[_Union[CoordinatedTask, _Mapping]] = ...) -> None: ...

class ResetTaskRequest(_message.Message):
    __slots__ = ("source_task",)
    SOURCE_TASK_FIELD_NUMBER: _ClassVar[int]
    source_task: CoordinatedTask
    def __init__(self, source_task: _Optional[_Union[CoordinatedTask, _Mapping]] = ...) -> None: ...

class ReportErrorToTaskRequest(_message.Message):
    __slots__ = ("error_code", "error_message", "error_payload")
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    error_code: int
    error_message: str
    error_payload: bytes
    def __init__(self, error_code: _Optional[int] = ..., error_message: _Optional[str] = ..., error_payload: _Optional[bytes] = ...) -> None: ...

class ReportErrorToServiceRequest(_message.Message):
    __slots__ = ("error_code", "error_message", "error_origin")
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_ORIGIN_FIELD_NUMBER: _ClassVar[int]
    error_code: int
    error_message: str
    error_origin: CoordinatedTask
    def __init__(self, error_code: _Optional[int] = ..., error_message: _Optional[str] = ..., error_origin: _Optional[_Union[CoordinatedTask, _Mapping]] = ...) -> None: ...

class GetTaskStateRequest(_message.Message):
    __slots__ = ("source_task",)
    SOURCE_TASK_FIELD_NUMBER: _ClassVar[int]
    source_task: _containers.RepeatedCompositeFieldContainer[CoordinatedTask]
    def __init__(self, source_task: _Optional[_Iterable[_Union[CoordinatedTask, _Mapping]]] = ...) -> None: ...

class WatchJobStateRequest(_message.Message):
    __slots__ = ("job_name", "version_number")
    JOB_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_NUMBER_FIELD_NUMBER: _ClassVar[int]
    job_name: str
    version_number: int
    def __init__(self, job_name: _Optional[str] = ..., version_number: _Optional[int] = ...) -> None: ...

class InsertKeyValueRequest(_message.Message):
    __slots__ = ("kv", "allow_overwrite")
    KV_FIELD_NUMBER: _ClassVar[int]
    ALLOW_OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    kv: KeyValueEntry
    allow_overwrite: bool
    def __init__(self, kv: _Optional[_Union[KeyValueEntry, _Mapping]] = ..., allow_overwrite: _Optional[bool] = ...) -> None: ...

class GetKeyValueRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class TryGetKeyValueRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class IncrementKeyValueRequest(_message.Message):
    __slots__ = ("key", "increment")
    KEY_FIELD_NUMBER: _ClassVar[int]
    INCREMENT_FIELD_NUMBER: _ClassVar[int]
    key: str
    increment: int
    def __init__(self, key: _Optional[str] = ..., increment: _Optional[int] = ...) -> None: ...

class GetKeyValueDirRequest(_message.Message):
    __slots__ = ("directory_key",)
    DIRECTORY_KEY_FIELD_NUMBER: _ClassVar[int]
    directory_key: str
    def __init__(self, directory_key: _Optional[str] = ...) -> None: ...

class DeleteKeyValueRequest(_message.Message):
    __slots__ = ("key", "is_directory")
    KEY_FIELD_NUMBER: _ClassVar[int]
    IS_DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    key: str
    is_directory: bool
    def __init__(self, key: _Optional[str] = ..., is_directory: _Optional[bool] = ...) -> None: ...

class BarrierRequest(_message.Message):
    __slots__ = ("barrier_id", "barrier_timeout_in_ms", "tasks", "source_task", "counter")
    BARRIER_ID_FIELD_NUMBER: _ClassVar[int]
    BARRIER_TIMEOUT_IN_MS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TASK_FIELD_NUMBER: _ClassVar[int]
    COUNTER_FIELD_NUMBER: _ClassVar[int]
    barrier_id: str
    barrier_timeout_in_ms: int
    tasks: _containers.RepeatedCompositeFieldContainer[CoordinatedTask]
    source_task: CoordinatedTask
    counter: int
    def __init__(self, barrier_id: _Optional[str] = ..., barrier_timeout_in_ms: _Optional[int] = ..., tasks: _Optional[_Iterable[_Union[CoordinatedTask, _Mapping]]] = ..., source_task: _Optional[_Union[CoordinatedTask, _Mapping]] = ..., counter: _Optional[int] = ...) -> None: ...

class CancelBarrierRequest(_message.Message):
    __slots__ = ("barrier_id", "counter", "source_task")
    BARRIER_ID_FIELD_NUMBER: _ClassVar[int]
    COUNTER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TASK_FIELD_NUMBER: _ClassVar[int]
    barrier_id: str
    counter: int
    source_task: CoordinatedTask
    def __init__(self, barrier_id: _Optional[str] = ..., counter: _Optional[int] = ..., source_task: _Optional[_Union[CoordinatedTask, _Mapping]] = ...) -> None: ...

class GetAliveTasksRequest(_message.Message):
    __slots__ = ("requesting_task", "tasks")
    REQUESTING_TASK_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    requesting_task: CoordinatedTask
    tasks: _containers.RepeatedCompositeFieldContainer[CoordinatedTask]
    def __init__(self, requesting_task: _Optional[_Union[CoordinatedTask, _Mapping]] = ..., tasks: _Optional[_Iterable[_Union[CoordinatedTask, _Mapping]]] = ...) -> None: ...
