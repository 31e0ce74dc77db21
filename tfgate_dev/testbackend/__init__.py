"""A TensorFlow Serving ModelServer stand-in for tfgate's tests, demo and benchmarks.

No ``tensorflow_model_server`` can be installed here, so this backend serves real TensorFlow
SavedModels (built at start-up in a temporary directory, loaded with ``tf.saved_model.load``)
through the real ``tensorflow_serving.apis`` messages, answering like ModelServer does.
It runs only as a subprocess; importing this package does NOT import TensorFlow.

    python -m tfgate_dev.testbackend --listen 127.0.0.1:0 [--record FILE] [--ready-file FILE]

``--listen`` takes ``host:port`` (port 0 picks a free one) or ``unix:/path``. Once serving it
prints one line ``READY <bound address>`` and writes the same address to ``--ready-file``.
SIGTERM/SIGINT stop it cleanly. In Python, use ``start_backend()`` below.

Models (all inputs/outputs are float32 of shape [None] unless said otherwise):
  half_plus_two v1 (label "stable") and v2 (label "canary", the latest):
    serving_default  x -> y = 0.5*x + 2 (v1) / 0.5*x + 3 (v2)        predict
    times_three      x -> y = 3*x                                    predict
    regress_x        inputs: string [None] serialized tf.Example with float feature "x"
                     (default 0) -> outputs = 0.5*x + 2              regress
    classify_x       same inputs -> scores float32 [None,2] = (1-sigmoid(x), sigmoid(x)),
                     classes string [None,2] = ("neg", "pos")        classify
  other_model v1:    serving_default  x -> y = x + 1                 predict

Services: tensorflow.serving.PredictionService (Predict, Classify, Regress, MultiInference,
GetModelMetadata), tensorflow.serving.ModelService (GetModelStatus, HandleReloadConfigRequest,
which is recorded and answered OK but never applied), grpc.health.v1.Health (Check; Watch sends
SERVING ``x-test-watch-count`` times, default 3, every ``x-test-watch-interval-ms``, default 0,
then ends OK). Any other method is recorded and answered UNIMPLEMENTED.

Recording (``--record FILE``): before a call is processed, one JSON line is appended and flushed:
``{"method", "request_b64" (exact bytes received), "metadata": [[k, v]...] (-bin values
base64), "time_remaining" (seconds, null without deadline), "peer"}``. For an unknown method,
``request_b64`` is its first request message (empty if none).

Test hooks, read from request metadata on every call:
  x-test-sleep-ms: N      sleep N ms first; ends early with CANCELLED if the call goes away.
  x-test-fail: CODE_NAME  abort with that status code and details "test failure requested",
                          trailers x-test-trailer: trailer-value, x-test-trailer-bin: 00 01 "binary".
Every successful call sends initial metadata x-backend-initial: 1 and trailer
x-backend: tfgate-testbackend.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

_REPO_ROOT = Path(__file__).resolve().parents[2]


class BackendProcess:
    """A running backend subprocess (see ``start_backend``)."""

    def __init__(
        self,
        process: subprocess.Popen,
        address: str,
        record_path: Path | None,
        stderr_file: IO[bytes],
        temp_record: bool,
    ) -> None:
        self.process = process
        self.address = address
        self.record_path = record_path
        self._stderr_file = stderr_file
        self._temp_record = temp_record
        self._reader: threading.Thread | None = None

    def records(self) -> list[dict[str, Any]]:
        """Recorded calls, oldest first: method, request (bytes), metadata [(k, v)] with -bin
        values as bytes, time_remaining, peer."""
        if self.record_path is None:
            raise RuntimeError("backend was started without record=")
        out = []
        text = self.record_path.read_text(encoding="utf-8") if self.record_path.exists() else ""
        for line in text.splitlines(keepends=True):
            if not line.endswith("\n"):
                break  # a line still being written
            entry = json.loads(line)
            entry["request"] = base64.b64decode(entry.pop("request_b64"))
            entry["metadata"] = [
                (k, base64.b64decode(v) if k.endswith("-bin") else v) for k, v in entry["metadata"]
            ]
            out.append(entry)
        return out

    def clear_records(self) -> None:
        if self.record_path is not None:
            self.record_path.write_bytes(b"")  # the backend appends, so it continues at 0

    def stderr_tail(self, limit: int = 4000) -> str:
        self._stderr_file.flush()
        self._stderr_file.seek(0)
        return self._stderr_file.read().decode(errors="replace")[-limit:]

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait (kill after ``timeout``), and remove temporary files."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._reader is not None:
            self._reader.join(5)  # reaches EOF now that the process is gone
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()
        self._stderr_file.close()
        if self._temp_record and self.record_path is not None:
            self.record_path.unlink(missing_ok=True)

    def __enter__(self) -> BackendProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_backend(
    listen: str = "127.0.0.1:0",
    record: str | os.PathLike | bool | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> BackendProcess:
    """Start ``python -m tfgate_dev.testbackend`` and wait until it serves.

    ``record``: a file path, True for a temporary file (removed by ``stop()``), or None.
    ``env``: extra environment variables, applied over ``os.environ``.
    The backend also exits when this process dies (its stdin pipe closes).
    Raises RuntimeError, with the stderr tail, if it exits or is not ready within ``timeout``.
    """
    temp_record = record is True
    if temp_record:
        fd, name = tempfile.mkstemp(prefix="tfgate-record-", suffix=".jsonl")
        os.close(fd)
        record_path: Path | None = Path(name)
    else:
        record_path = Path(record) if record else None
    child_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_REPO_ROOT), child_env.get("PYTHONPATH")) if p
    )
    cmd = [
        sys.executable,
        "-m",
        "tfgate_dev.testbackend",
        "--listen",
        listen,
        "--exit-on-stdin-eof",
    ]
    if record_path is not None:
        cmd += ["--record", str(record_path)]
    stderr_file = tempfile.TemporaryFile(prefix="tfgate-backend-stderr-")  # noqa: SIM115 - outlives this frame
    process = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr_file,
        env=child_env,
        cwd=_REPO_ROOT,
    )
    ready = threading.Event()
    found: list[str] = []

    def read_stdout() -> None:  # keeps draining stdout after READY
        assert process.stdout is not None
        for raw_line in process.stdout:
            line = raw_line.decode(errors="replace").strip()
            if line.startswith("READY ") and not found:
                found.append(line[len("READY ") :])
                ready.set()
        ready.set()  # EOF: the process is gone

    backend = BackendProcess(process, "", record_path, stderr_file, temp_record)
    backend._reader = threading.Thread(target=read_stdout, name="testbackend-stdout", daemon=True)
    backend._reader.start()
    if not ready.wait(timeout) or not found:
        if ready.is_set():  # stdout closed: the process is exiting
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                pass
        code = process.poll()
        tail = backend.stderr_tail()
        backend.stop()
        state = f"exited with {code}" if code is not None else f"not ready after {timeout:.0f} s"
        raise RuntimeError(f"testbackend {state}; stderr tail:\n{tail}")
    backend.address = found[0]
    return backend
