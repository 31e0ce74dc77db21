"""Worker processes: `tfgate serve --workers N` runs N processes that share one port.

This module knows nothing of the pipeline. The supervisor re-executes the same
`serve` command N times with `--worker-index i`; each worker pins itself to one core,
builds its own state and listens on the same host:port with SO_REUSEPORT, so the
kernel spreads incoming *connections* (not calls) across workers. Before any starts,
the caller (cli.py) has claimed the port for this instance (`ports.py`), and put what
workers must share (the limit table) in `instance_dir()`.

Why processes pinned to cores: one Python process runs on one core at a time (the
GIL), and a sync gRPC server whose threads float across cores pays for every
hand-off between its threads with a cross-core wake-up (docs/performance.md: ~600 µs per
proxied call unpinned vs ~250 µs pinned).

Default N: one per core this process may use (`os.sched_getaffinity`), lowered to a
cgroup CPU quota if one is set. Workers are pinned only when the cores are really
theirs: not when N exceeds them, and not under a quota smaller than the core set
(there, other tenants' processes share those cores, and pinning would crowd them).

Metrics: the workers of an instance keep their Prometheus values in files of one
directory of the instance (`shared_metrics`: prometheus-client's multiprocess mode), so
a scrape of any worker's admin listener reports the whole instance; the directory goes
with the instance, and a dead worker's live gauges are dropped when it is reaped.

Lifecycle: SIGTERM/SIGINT are forwarded to every worker, which drains for
`server.grace_s`; the supervisor exits once all have, 0 if all exited cleanly. A second
signal is forwarded too, so every worker exits at once. SIGHUP is forwarded: every worker
reloads (each also watches the config's files itself, `service.py`).
A worker that dies on its own is logged and restarted on its core. One that dies
before it serves counts as a failed start; after `MAX_FAILED_STARTS` in a row (a port
taken, a bad certificate: retrying will not help) the supervisor stops every worker
and exits with that worker's status.
"""

from __future__ import annotations

import contextlib
import math
import os
import pathlib
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from proxy import oplog

log = oplog.get_logger()

MAX_FAILED_STARTS = 3
_POLL_S = 0.2
_READY_TIMEOUT_S = 120.0


def cpu_quota(path: pathlib.Path = pathlib.Path("/sys/fs/cgroup/cpu.max")) -> float | None:
    """Cores allowed by a cgroup v2 CPU quota (`cpu.max`), or None without one."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        return None


@dataclass(frozen=True)
class Plan:
    """How many workers, and the core each one is pinned to (None: not pinned)."""

    workers: int
    cpus: tuple[int | None, ...]


def plan(requested: int | None, *, pin: bool = True,
         affinity: Sequence[int] | None = None, quota: float | None = None) -> Plan:
    cores = sorted(os.sched_getaffinity(0) if affinity is None else affinity)
    quota = cpu_quota() if affinity is None and quota is None else quota
    usable = len(cores) if quota is None else max(1, min(len(cores), math.ceil(quota)))
    n = requested if requested is not None else usable
    if n < 1:
        raise ValueError("--workers must be at least 1")
    dedicated = quota is None or quota >= len(cores)
    if pin and dedicated and n <= len(cores):
        return Plan(n, tuple(cores[:n]))
    return Plan(n, (None,) * n)


def pin_to(cpu: int | None) -> bool:
    """Pin this process (and every thread it starts from now on) to one core."""
    if cpu is None:
        return False
    try:
        os.sched_setaffinity(0, {cpu})
    except (OSError, AttributeError) as exc:
        log.warning("running unpinned", cpu=cpu, error=str(exc))
        return False
    return True


SUPERVISOR_ENV = "TFGATE_SUPERVISOR_PID"
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus-client when it is imported
_SHM = pathlib.Path("/dev/shm")
_INSTANCE = "tfgate-instance-"   # + the supervisor's pid + "-" + random


def scratch_parent() -> pathlib.Path:
    """Where the supervisor keeps its files: /dev/shm where usable (memory, and writable
    in containers with a read-only root), else the system temp dir."""
    if _SHM.is_dir() and os.access(_SHM, os.W_OK | os.X_OK):
        return _SHM
    return pathlib.Path(tempfile.gettempdir())


@contextlib.contextmanager
def instance_dir(parent: pathlib.Path | None = None) -> Iterator[pathlib.Path]:
    """A private directory (mode 0700) for files the workers of this instance share,
    in memory (/dev/shm) where there is one; removed when the supervisor stops. One left
    by a supervisor that was killed (SIGKILL: it could not clean up) is removed by the
    next start. What goes in it is the caller's business (cli.py: the limit table)."""
    parent = parent or scratch_parent()
    _remove_orphans(parent)
    with tempfile.TemporaryDirectory(prefix=f"{_INSTANCE}{os.getpid()}-", dir=parent) as tmp:
        yield pathlib.Path(tmp)


@contextlib.contextmanager
def shared_metrics(instance: pathlib.Path) -> Iterator[pathlib.Path]:
    """A metrics directory in the instance directory, named in the environment the
    workers inherit (set before any of them imports prometheus-client)."""
    directory = instance / "metrics"
    directory.mkdir(mode=0o700)
    before = os.environ.get(METRICS_ENV)
    os.environ[METRICS_ENV] = str(directory)
    try:
        yield directory
    finally:
        if before is None:
            os.environ.pop(METRICS_ENV, None)
        else:
            os.environ[METRICS_ENV] = before


def _metrics_gone(pid: int) -> None:
    """Drop a dead worker's live gauges (calls in flight); its counters stay."""
    directory = os.environ.get(METRICS_ENV)
    if directory:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, directory)


def _remove_orphans(parent: pathlib.Path) -> None:
    """Remove instance directories of this user whose supervisor is gone."""
    for entry in parent.glob(_INSTANCE + "*"):
        pid = entry.name.removeprefix(_INSTANCE).partition("-")[0]
        try:
            info = entry.lstat()
        except OSError:
            continue
        if (pid.isdigit() and stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
                and not _alive(int(pid))):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True   # someone else's process: not ours to judge
    return True


def die_with_parent() -> None:
    """Linux: get SIGTERM if the supervisor dies, so no worker is left serving alone."""
    parent = int(os.environ.get(SUPERVISOR_ENV, "0"))
    if not parent:
        return
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


class _Worker:
    def __init__(self, index: int, cpu: int | None, argv: list[str], ready: pathlib.Path) -> None:
        self.index, self.cpu, self.argv, self.ready = index, cpu, argv, ready
        self.failed_starts = 0
        self.proc: subprocess.Popen | None = None
        self.started = 0.0

    def start(self) -> None:
        self.ready.unlink(missing_ok=True)
        # Own process group: a terminal's Ctrl-C reaches the supervisor only, which
        # forwards one SIGTERM. stdout/stderr are inherited: one log stream.
        env = {**os.environ, SUPERVISOR_ENV: str(os.getpid())}
        self.proc = subprocess.Popen(self.argv, process_group=0, env=env)
        self.started = time.monotonic()


def supervise(worker_argv: Callable[[int, int | None, pathlib.Path], list[str]], p: Plan,
              ready_file: pathlib.Path | None, address: str) -> int:
    """Run `p.workers` workers until a signal (exit 0 if they stop cleanly) or until
    they keep failing to start (exit 1). `worker_argv(index, cpu, ready)` is the
    command line of one worker, which writes `ready` once it serves."""
    stopping: list[int] = []
    workers: list[_Worker] = []

    def on_signal(signum: int, _frame: object) -> None:
        if stopping:  # the second signal: workers exit at once
            _signal_all(workers, signum)
        stopping.append(signum)

    def on_hangup(signum: int, _frame: object) -> None:  # reload: every worker reloads
        _signal_all(workers, signal.SIGHUP)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    with tempfile.TemporaryDirectory(prefix="tfgate-workers-", dir=scratch_parent()) as tmp:
        workers += [_Worker(i, cpu, worker_argv(i, cpu, pathlib.Path(tmp) / f"{i}.ready"),
                            pathlib.Path(tmp) / f"{i}.ready") for i, cpu in enumerate(p.cpus)]
        for w in workers:
            w.start()
        announced = False
        deadline = time.monotonic() + _READY_TIMEOUT_S
        code = 0
        while not stopping:
            if not announced and all(w.ready.exists() for w in workers):
                announced = True
                log.info("start", address=address, workers=len(workers), pid=os.getpid(),
                         cpus=["-" if w.cpu is None else w.cpu for w in workers])
                if ready_file:
                    ready_file.write_text(address + "\n")
            elif not announced and time.monotonic() > deadline:
                log.error("workers not ready; stopping", after_s=_READY_TIMEOUT_S)
                code = 1
                break
            if (failed := _reap(workers)) is not None:
                code = failed
                break
            time.sleep(_POLL_S)
        if stopping:
            log.info("drain", signal=signal.Signals(stopping[0]).name, workers=len(workers))
        code = _stop_all(workers, signal.SIGTERM) or code
        log.info("stop", exit_code=code)
        return code


def _reap(workers: list[_Worker]) -> int | None:
    """Restart workers that died; an exit code when restarting is hopeless."""
    for w in workers:
        assert w.proc is not None
        status = w.proc.poll()
        if status is None:
            continue
        uptime = time.monotonic() - w.started
        served = w.ready.exists()
        _metrics_gone(w.proc.pid)
        w.failed_starts = 0 if served else w.failed_starts + 1
        log.error("worker exited", worker=w.index, pid=w.proc.pid, cpu=w.cpu, status=status,
                  uptime_s=round(uptime, 1), served=served)
        if w.failed_starts >= MAX_FAILED_STARTS:
            log.error("stopping: a worker keeps failing to start", worker=w.index,
                      failed_starts=w.failed_starts)
            return status if status > 0 else 1
        if not served:
            time.sleep(min(5.0, 0.5 * 2 ** w.failed_starts))  # back off before retrying
        w.start()
    return None


def _signal_all(workers: list[_Worker], signum: int) -> None:
    for w in workers:
        if w.proc is not None and w.proc.poll() is None:
            w.proc.send_signal(signum)


def _stop_all(workers: list[_Worker], signum: int) -> int:
    _signal_all(workers, signum)
    code = 0
    for w in workers:
        if w.proc is None:
            continue
        status = w.proc.wait()
        if status not in (0, -signum):
            code = 1
    return code
