"""`tfgate serve` with a thread-CPU timer around each synchronous stage of a call.

    python bench/stagecpu.py OUT.txt serve --config CONFIG [--ready-file PATH]

Runs tfgate's own CLI in this process after wrapping the stages below; when the
process exits it writes, per stage, how often it ran and its mean thread CPU time
(time.thread_time, so time spent waiting for other threads is not counted). Each
wrapper adds its own cost (two clock reads, ~1-2 µs in the serving process), and a
nested stage's cost is inside its caller's. `python -m bench.percall --stages` runs
tfgate this way; the numbers say where tfgate's own CPU goes in the serving process,
where the same code costs 2-3× what a tight loop (bench.pipeline) shows.
"""

from __future__ import annotations

import atexit
import collections
import importlib
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Any

# (module, attribute path): synchronous functions on every small Predict's path.
STAGES = (
    ("proxy.boundary", "CallScope.__init__"),
    ("proxy.server", "request_of"),
    ("proxy.admission", "start"),
    ("proxy.admission", "inspect"),
    ("proxy.inspect.serving", "_parse"),
    ("proxy.inspect.serving", "_spec_target"),
    ("proxy.inspect.tensors", "inspect_inputs"),
    ("proxy.admission", "admit"),
    ("proxy.boundary", "CallScope.finish"),
    ("proxy.metrics", "observe"),
    ("proxy.audit", "AuditLog.emit"),
    ("proxy.audit", "event_fields"),
)

_spent: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])


def _timed(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    clock = time.thread_time

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            entry = _spent[label]
            entry[0] += 1
            entry[1] += clock() - t0
    return timed


def _wrap(module_name: str, path: str) -> None:
    owner: Any = importlib.import_module(module_name)
    *outer, name = path.split(".")
    for part in outer:
        owner = getattr(owner, part, None)
    if not hasattr(owner, name):  # another checkout may lack a stage
        return
    setattr(owner, name, _timed(f"{module_name.removeprefix('proxy.')}.{path}",
                                getattr(owner, name)))


def report(path: pathlib.Path) -> None:
    lines = [f"{label:40s} {n:9d} calls {s / n * 1e6 if n else 0:8.1f} µs\n"
             for label, (n, s) in _spent.items()]
    path.write_text("".join(lines))


def main() -> int:
    out = pathlib.Path(sys.argv[1])
    for module_name, path in STAGES:
        _wrap(module_name, path)
    atexit.register(report, out)
    from proxy import cli
    return cli.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
