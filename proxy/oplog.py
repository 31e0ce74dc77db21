"""tfgate's operational log: structured events (structlog), one line each, on stderr.

It is not the audit stream: `audit.py` writes one event per call to its own sink with its
own processors, and nothing here touches it. Modules log with `log = oplog.get_logger()`
and constant event names with fields (`log.info("reload", outcome="ok", ...)`); only
`cli.py` calls `configure` (from the config's `logging:` section, again on each reload).
The standard library's `logging` (gRPC's Python layer, asyncio) is routed through the same
renderer, so one process writes one format.

Console lines read `tfgate: EVENT key=value ...` (the level is shown unless it is info);
JSON lines are objects with `event`, `level`, `timestamp` and `logger: "tfgate"`.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
_NAME = "tfgate"
_static: dict[str, Any] = {}  # fields every line of this process carries (worker index)


def get_logger() -> Any:
    """The operational logger (lazy: it follows a later `configure`)."""
    return structlog.get_logger(_NAME)


class _Sink:
    """Where lines go: `stream`, or whatever `sys.stderr` is when a line is written. A
    write that fails (a closed stream, a full disk) is dropped: logging never fails the
    code that logs (a call in the data path, a reload)."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream

    def write(self, text: str) -> None:
        try:
            (self._stream or sys.stderr).write(text)
        except (OSError, ValueError):
            pass

    def flush(self) -> None:
        try:
            (self._stream or sys.stderr).flush()
        except (OSError, ValueError):
            pass


def configure(fmt: str = "console", level: str = "info", *, stream: TextIO | None = None,
              **static: Any) -> None:
    """Set format (`console`/`json`), level and stream (default: stderr) for this
    process; `static` fields (e.g. `worker=1`) go on every line. Safe to call again (a
    reload does)."""
    sink = _Sink(stream)
    if static:
        _static.clear()
        _static.update(static)
    renderer: Processor = (structlog.processors.JSONRenderer(sort_keys=False)
                           if fmt == "json" else _console)
    pre: list[Processor] = [structlog.processors.add_log_level, _add_static]
    if fmt == "json":
        pre.append(structlog.processors.TimeStamper(fmt="iso", utc=True))
    structlog.configure(
        processors=[*pre, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=sink),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,  # a reload may change format or level
    )
    _route_stdlib(pre, renderer, LEVELS[level], sink)


def _route_stdlib(pre: list[Processor], renderer: Processor, level: int, sink: _Sink) -> None:
    handler = logging.StreamHandler(sink)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *pre],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer]))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def _add_static(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    event.setdefault("logger", _NAME)
    for key, value in _static.items():
        event.setdefault(key, value)
    return event


def _console(_logger: WrappedLogger, _name: str, event: MutableMapping[str, Any]) -> str:
    """`tfgate: [LEVEL: ]EVENT key=value ...`, then a traceback if one was logged."""
    fields = dict(event)
    name, level = fields.pop("event", ""), fields.pop("level", "info")
    if fields.get("logger") == _NAME:
        del fields["logger"]
    trace = fields.pop("exception", None)
    head = f"tfgate: {name}" if level == "info" else f"tfgate: {level}: {name}"
    line = " ".join([head, *(f"{key}={_text(value)}" for key, value in fields.items())])
    return f"{line}\n{trace}" if trace else line


def _text(value: Any) -> str:
    if isinstance(value, str) and value and not any(c.isspace() or c in '"=' for c in value):
        return value
    if isinstance(value, bool | int | float) or value is None:
        return json.dumps(value)
    return json.dumps(value if isinstance(value, str | list | dict) else str(value))
