"""A real TensorFlow cluster for end-to-end tests: two `tf.distribute.Server` workers and
a TF client, each its own process in its own network namespace (`unshare -n`).

Each namespace has only loopback, so the processes cannot reach each other, nor be
reached, except through the routes the test hands in. Every task listens on loopback at
a fixed port (no clash: each namespace has its own ports) and is reachable from
outside only through its unix-socket *inbox* (`Cluster.inbox(name)`). Inside each
namespace, every other task's address (127.0.0.1:its port) is relayed to the route the
test chose for that (source, destination) pair:

- a unix socket path ("unix:/path"): a forwarder or proxy listening there;
- "host:port": a TCP listener in the test's own namespace (bridged by the harness);
- None: unreachable (connections are refused);
- no entry: straight to the destination's inbox.

`Cluster.client.run(action, **args)` runs one client action and returns its JSON
result; actions are listed in tests/tfnode.py. Starting costs one TF import per
process (seconds): share a cluster per session. Without network namespaces the
cluster cannot be isolated: `namespaces_unavailable()` says why, for a pytest skip
(tests never fall back to running TF servers on the host's own network).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import pathlib
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any, Self

from tests.tfnode import RESULT_MARK, _splice

REPO = pathlib.Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 180  # TF imports on a busy 2-core machine
ACTION_TIMEOUT_S = 120


@dataclass(frozen=True)
class Task:
    job: str
    index: int
    port: int

    @property
    def name(self) -> str:
        return f"{self.job}{self.index}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


WORKERS = (Task("worker", 0, 2222), Task("worker", 1, 2223))
CLIENT = Task("client", 0, 2224)
TASKS = (*WORKERS, CLIENT)


@functools.cache
def _unshare() -> tuple[list[str] | None, str]:
    """The command that runs a process in a fresh network namespace: as root `unshare -n`,
    otherwise through a user namespace (`unshare -rn`), where the kernel allows it."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None, "needs util-linux unshare and iproute2 ip"
    errors = []
    for command in (["unshare", "-n"], ["unshare", "-rn"]):
        try:
            subprocess.run([*command, "ip", "link", "set", "lo", "up"], check=True,
                           capture_output=True, timeout=30)
            return command, ""
        except (subprocess.SubprocessError, OSError) as e:
            errors.append(f"{' '.join(command)}: {e}")
    return None, "; ".join(errors)


def namespaces_unavailable() -> str | None:
    """None if processes can get their own network namespace here, else why not (for
    pytest.skip). There is no loopback fallback on purpose: without a namespace, every
    tf.distribute.Server would listen, unauthenticated, on 0.0.0.0."""
    command, problem = _unshare()
    return None if command else f"network namespaces unavailable ({problem})"


class Bridge:
    """unix socket at `path` -> TCP host:port in this namespace (for "host:port" routes)."""

    def __init__(self, path: pathlib.Path, host: str, port: int) -> None:
        self.path, self.host, self.port = path, host, port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> Bridge:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(asyncio.start_unix_server(
            lambda r, w: _splice(r, w, lambda: asyncio.open_connection(self.host, self.port)),
            str(self.path)), self._loop).result(30)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class Node:
    """One tests.tfnode process and its JSON answers."""

    def __init__(self, config: dict[str, Any], log: pathlib.Path,
                 env: Mapping[str, str] | None = None) -> None:
        command = [sys.executable, "-m", "tests.tfnode", json.dumps(config)]
        env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
        self._log: IO[str] = log.open("w")
        self.process = subprocess.Popen(
            [*(_unshare()[0] or ["unshare", "-n"]), *command], cwd=REPO, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)
        self._answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(RESULT_MARK):
                self._answers.put(json.loads(line[len(RESULT_MARK):]))
        self._answers.put(None)  # the process ended

    def answer(self, timeout: float) -> dict[str, Any]:
        try:
            result = self._answers.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no answer within {timeout}s (see {self._log.name})") from None
        if result is None:
            raise RuntimeError(f"tfnode exited with {self.process.wait()} (see {self._log.name})")
        return result

    def run(self, action: str, timeout: float = ACTION_TIMEOUT_S, **args: Any) -> dict[str, Any]:
        """Run one client action; {"ok": True, "value": ...} or {"ok": False, "error": ...}."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"action": action, "args": args}) + "\n")
        self.process.stdin.flush()
        return self.answer(timeout)

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()  # our own child, by its pid
            self.process.wait(15)
        self._log.close()


class Cluster:
    """Two workers and a client, each in its own network namespace, joined by routes."""

    def __init__(self, workdir: pathlib.Path,
                 routes: Mapping[tuple[str, str], str | None] | None = None,
                 client_env: Mapping[str, str] | None = None,
                 workers: tuple[Task, ...] = WORKERS) -> None:
        """`client_env`: extra environment for the client, e.g.
        TF_EAGER_REMOTE_USE_SEND_TENSOR_RPC=0, which makes workers pull the client's
        tensors with RecvTensor (a connection back to the client). `workers`: fewer
        workers (the first of WORKERS, say) for a smaller cluster."""
        self.workers = workers
        self.tasks = (*workers, CLIENT)
        self.workdir = workdir
        self.routes = dict(routes or {})
        self.client_env = dict(client_env or {})
        self.nodes: dict[str, Node] = {}
        self._bridges: list[Bridge] = []

    def inbox(self, name: str) -> pathlib.Path:
        """The unix socket that reaches task `name` ("worker0", "worker1", "client0")."""
        return self.workdir / f"{name}.sock"

    @property
    def client(self) -> Node:
        return self.nodes[CLIENT.name]

    def _dials(self, source: Task) -> list[list[Any]]:
        dials = []
        for target in self.tasks:
            if target == source:
                continue
            route = self.routes.get((source.name, target.name), f"unix:{self.inbox(target.name)}")
            if route is None:
                continue  # nothing listens on that address: connections are refused
            if not route.startswith("unix:"):
                host, _, port = route.rpartition(":")
                bridged = self.workdir / f"bridge-{source.name}-{target.name}.sock"
                self._bridges.append(Bridge(bridged, host, int(port)).start())
                route = f"unix:{bridged}"
            dials.append([target.port, route.removeprefix("unix:")])
        return dials

    def _config(self, task: Task) -> dict[str, Any]:
        workers = [w.address for w in self.workers]
        cluster = {"worker": workers, **({"client": [CLIENT.address]} if task == CLIENT else {})}
        return {"isolated": True, "role": "client" if task == CLIENT else "server",
                "job": task.job, "task": task.index, "cluster": cluster,
                "inboxes": [[task.port, str(self.inbox(task.name))]], "dials": self._dials(task)}

    def start(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for task in self.tasks:
            self.nodes[task.name] = Node(self._config(task), self.workdir / f"{task.name}.log",
                                         self.client_env if task == CLIENT else None)
        for name, node in self.nodes.items():
            ready = node.answer(START_TIMEOUT_S)
            assert ready.get("ready"), (name, ready)
        return self

    def add_client(self, name: str, routes: Mapping[str, str | None],
                   env: Mapping[str, str] | None = None) -> Node:
        """Another client process `name` (its own namespace, the client's task address),
        reaching each worker only by `routes[worker name]` ("unix:PATH", or None for
        unreachable; no entry: unreachable too). Stopped with the cluster."""
        dials = [[t.port, route.removeprefix("unix:")] for t in self.workers
                 if (route := routes.get(t.name)) is not None]
        config = {**self._config(CLIENT), "dials": dials,
                  "inboxes": [[CLIENT.port, str(self.workdir / f"{name}.sock")]]}
        node = self.nodes[name] = Node(config, self.workdir / f"{name}.log", env)
        ready = node.answer(START_TIMEOUT_S)
        assert ready.get("ready"), (name, ready)
        return node

    def restart_client(self, client_env: Mapping[str, str] | None = None) -> Node:
        """A fresh client process (with other environment), keeping the workers."""
        self.nodes.pop(CLIENT.name).stop()
        self.client_env = dict(client_env or {})
        node = self.nodes[CLIENT.name] = Node(
            self._config(CLIENT), self.workdir / f"{CLIENT.name}-restarted.log", self.client_env)
        assert node.answer(START_TIMEOUT_S).get("ready")
        return node

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
        for bridge in self._bridges:
            bridge.stop()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
