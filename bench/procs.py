"""Processes under test: start them (optionally pinned), wait until ready, read their
CPU time and memory from /proc (through psutil), and stop them."""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import psutil

REPO = pathlib.Path(__file__).resolve().parent.parent


def pin_prefix(cpu: int | None) -> list[str]:
    """`taskset -c CPU` so the child and every thread it creates stay on that core."""
    if cpu is None:
        return []
    if shutil.which("taskset") is None:
        raise RuntimeError("taskset (util-linux) is needed for --layout pinned")
    return ["taskset", "-c", str(cpu)]


class Service:
    """A child process that writes its address to a ready file once serving."""

    def __init__(self, name: str, argv: Sequence[str], workdir: pathlib.Path,
                 cpu: int | None = None, timeout_s: float = 60.0,
                 repo: pathlib.Path | None = None) -> None:
        """`repo`: the checkout whose code the child runs (default: this one)."""
        self.name = name
        repo = repo or REPO
        ready = workdir / f"{name}.ready"
        ready.unlink(missing_ok=True)
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        env = {**os.environ, "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.popen = subprocess.Popen(
            [*pin_prefix(cpu), sys.executable, *argv, "--ready-file", str(ready)],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=repo, env=env)
        deadline = time.monotonic() + timeout_s
        while not ready.exists() or not ready.read_text().endswith("\n"):
            if self.popen.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.popen.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} not ready after {timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(0.02)
        self.address = ready.read_text().strip()
        self.proc = psutil.Process(self.popen.pid)

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def tree(self) -> list[psutil.Process]:
        """This process and its descendants (tfgate workers are children of the supervisor)."""
        try:
            return [self.proc, *self.proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_s(self) -> float:
        """utime + stime of every thread of every process in the tree, in seconds."""
        total = 0.0
        for p in self.tree():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def rss_mb(self) -> float:
        return sum(_status_kb(p.pid, "VmRSS") for p in self.tree()) / 1024

    def peak_rss_mb(self) -> float:
        """Sum over the tree of each process's RSS high-water mark (VmHWM)."""
        return sum(_status_kb(p.pid, "VmHWM") for p in self.tree()) / 1024

    def reset_peak(self) -> None:
        """Reset VmHWM to the current RSS (writing 5 to clear_refs, Linux >= 4.0)."""
        for p in self.tree():
            try:
                pathlib.Path(f"/proc/{p.pid}/clear_refs").write_text("5")
            except OSError:
                pass

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class CpuMeter:
    """CPU seconds a set of services spent between `start()` and `stop()`."""

    def __init__(self, *services: Service) -> None:
        self._services = services
        self._start: list[float] = []

    def start(self) -> CpuMeter:
        self._start = [s.cpu_s() for s in self._services]
        return self

    def stop(self) -> list[float]:
        return [s.cpu_s() - t0 for s, t0 in zip(self._services, self._start, strict=True)]
