"""``start_rest_backend()``: the backend subprocess with its REST port (rest_main.py).

Like ``start_backend`` (same ``BackendProcess``: records, stop, stderr tail), plus
``rest_address``. Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from . import _REPO_ROOT, BackendProcess


class RestBackendProcess(BackendProcess):
    rest_address = ""


def start_rest_backend(record: bool = True, timeout: float = 120.0) -> RestBackendProcess:
    """Start it on free loopback ports, recording into a temporary file (when `record`)."""
    record_path = None
    if record:
        fd, name = tempfile.mkstemp(prefix="tfgate-record-", suffix=".jsonl")
        os.close(fd)
        record_path = Path(name)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "tfgate_dev.testbackend.rest_main", "--listen", "127.0.0.1:0",
           "--rest-listen", "127.0.0.1:0", "--exit-on-stdin-eof"]
    if record_path is not None:
        cmd += ["--record", str(record_path)]
    stderr_file = tempfile.TemporaryFile(prefix="tfgate-backend-stderr-")  # noqa: SIM115 - outlives this frame
    process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=stderr_file, env=env, cwd=_REPO_ROOT)
    backend = RestBackendProcess(process, "", record_path, stderr_file, record)
    found: dict[str, str] = {}
    ready = threading.Event()

    def read_stdout() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            word, _, rest = raw.decode(errors="replace").strip().partition(" ")
            if word in ("REST", "READY") and word not in found:
                found[word] = rest
                if word == "READY":
                    ready.set()
        ready.set()

    backend._reader = threading.Thread(target=read_stdout, daemon=True)
    backend._reader.start()
    if not ready.wait(timeout) or "READY" not in found:
        tail = backend.stderr_tail()
        backend.stop()
        raise RuntimeError(f"testbackend (REST) did not start; stderr tail:\n{tail}")
    backend.address, backend.rest_address = found["READY"], found["REST"]
    return backend
