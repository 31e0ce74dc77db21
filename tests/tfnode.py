"""One TensorFlow process of a test cluster, run inside its own network namespace.

`python -m tests.tfnode '<json>'` is started by tests/tfcluster.py under `unshare -n`:
the namespace has only a loopback interface, so nothing outside can reach the TF
server's port, and the process can reach nothing outside. The only ways in and out
are unix sockets on the shared filesystem, bridged here to loopback TCP:

- `inboxes`: [port, path]: a unix socket at `path` whose connections reach 127.0.0.1:port
  in here (our own TF server);
- `dials`: [port, path]: 127.0.0.1:port in here is a peer task's address; its
  connections go to the unix socket at `path` (a forwarder, a proxy, or the peer).

Role "server" runs `tf.distribute.Server` until stdin closes. Role "client" reads one
JSON command per line on stdin and answers one JSON line (prefixed RESULT_MARK) per
command: connect, eager ops, tf.functions, a TF1 session, and attempts at ReadFile,
WriteFile and py_function on the remote worker.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

RESULT_MARK = "TFNODE "
WORKER0 = "/job:worker/replica:0/task:0/device:CPU:0"
WORKER1 = "/job:worker/replica:0/task:1/device:CPU:0"


# -- byte relays between unix sockets and loopback TCP -------------------------------------------

async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def _splice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  connect: Callable[[], Any]) -> None:
    try:
        up_reader, up_writer = await connect()
    except OSError:
        writer.close()
        return
    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
    writer.close()
    up_writer.close()


async def _relays(inboxes: list[list[Any]], dials: list[list[Any]], host: str,
                  ready: threading.Event) -> None:
    servers = []
    for port, path in inboxes:
        servers.append(await asyncio.start_unix_server(
            lambda r, w, port=port: _splice(r, w, lambda: asyncio.open_connection(
                host, port)), path))
    for port, path in dials:
        servers.append(await asyncio.start_server(
            lambda r, w, path=path: _splice(r, w, lambda: asyncio.open_unix_connection(path)),
            "127.0.0.1", port))
    ready.set()
    await asyncio.gather(*(s.serve_forever() for s in servers))


def start_relays(inboxes: list[list[Any]], dials: list[list[Any]],
                 host: str = "127.0.0.1") -> None:
    """Serve the relays from a daemon thread (they live as long as the process)."""
    ready = threading.Event()
    threading.Thread(target=lambda: asyncio.run(_relays(inboxes, dials, host, ready)),
                     daemon=True).start()
    if not ready.wait(30):
        raise RuntimeError("relays did not start")


# -- client actions -------------------------------------------------------------------------------

def _actions(tf: Any, cluster: dict[str, list[str]]) -> dict[str, Callable[..., Any]]:
    @tf.function
    def square_sum(a: Any) -> Any:
        return tf.reduce_sum(a * a)

    @tf.function
    def square_sum_local(a: Any) -> Any:
        return tf.reduce_sum(a * a)

    @tf.function
    def read_in_function(path: Any) -> Any:
        return tf.io.read_file(path)

    @tf.function
    def inner_read(path: Any) -> Any:
        return tf.io.read_file(path)

    @tf.function
    def outer_read(path: Any) -> Any:
        return inner_read(path) + ""

    def connect(client_address: str | None = None) -> list[str]:
        """`client_address`: advertise the client at another address than its task's."""
        spec = dict(cluster, **({"client": [client_address]} if client_address else {}))
        tf.config.experimental_connect_to_cluster(
            tf.train.ClusterSpec(spec), job_name="client", task_index=0)
        return sorted(d.name for d in tf.config.list_logical_devices())

    def eager_op() -> list[float]:
        with tf.device(WORKER0):
            y = tf.constant([1.0, 2.0, 3.0]) * 2.0 + 1.0
        return y.numpy().tolist()

    def remote_function() -> float:
        with tf.device(WORKER0):
            a = tf.constant([1.0, 2.0, 3.0])
            return float(square_sum(a).numpy())

    def remote_function_local_input() -> float:
        a = tf.constant([1.0, 2.0, 4.0])  # lives on the client
        with tf.device(WORKER0):
            return float(square_sum_local(a).numpy())

    def session() -> float:
        """A graph split over both workers: the master (worker0) registers worker1's part."""
        with tf.Graph().as_default():
            with tf.device(WORKER1):
                x = tf.compat.v1.placeholder(tf.float32, shape=[])
                b = x * 21.0
            with tf.device(WORKER0):
                c = b + 0.5
            with tf.compat.v1.Session("grpc://" + cluster["worker"][0]) as sess:
                return float(sess.run(c, feed_dict={x: 2.0}))

    def session_function() -> list[float]:
        """A TF1 graph calling a tf.function with a while loop, and its gradient: the
        graph's library holds the functions, reached through func-valued attrs."""
        @tf.function
        def loop(v: Any) -> Any:
            return tf.while_loop(lambda i, s: i < 3, lambda i, s: (i + 1, s + v * v),
                                 [tf.constant(0), tf.constant(0.0)])[1]

        with tf.Graph().as_default():
            with tf.device(WORKER0):
                x = tf.constant(2.0)
                y = loop(x)
                (grad,) = tf.gradients(y, [x])
            with tf.compat.v1.Session("grpc://" + cluster["worker"][0]) as sess:
                return [float(v) for v in sess.run([y, grad])]

    def session_read_file(path: str) -> str:
        with tf.Graph().as_default():
            with tf.device(WORKER0):
                data = tf.io.read_file(path)
            with tf.compat.v1.Session("grpc://" + cluster["worker"][0]) as sess:
                return sess.run(data).decode()

    def read_file(path: str) -> str:
        with tf.device(WORKER0):
            return tf.io.read_file(path).numpy().decode()

    def function_read_file(path: str) -> str:
        with tf.device(WORKER0):
            return read_in_function(tf.constant(path)).numpy().decode()

    def nested_read_file(path: str) -> str:
        """ReadFile two tf.functions deep: the outer one calls the inner one by name."""
        with tf.device(WORKER0):
            return outer_read(tf.constant(path)).numpy().decode()

    def session_nested_read_file(path: str) -> str:
        """A TF1 graph calling a tf.function that calls one holding ReadFile."""
        with tf.Graph().as_default():
            with tf.device(WORKER0):
                data = outer_read(tf.constant(path))
            with tf.compat.v1.Session("grpc://" + cluster["worker"][0]) as sess:
                return sess.run(data).decode()

    def session_big_constant(elements: int) -> float:
        """A TF1 graph constant declared with `elements` elements and one value: a few
        bytes on the wire, `elements` floats once the worker builds it."""
        with tf.Graph().as_default():
            with tf.device(WORKER0):
                total = tf.reduce_sum(tf.constant(1.0, shape=[elements]))
            with tf.compat.v1.Session("grpc://" + cluster["worker"][0]) as sess:
                return float(sess.run(total))

    def write_file(path: str, contents: str) -> bool:
        from tensorflow.python.eager import context

        with tf.device(WORKER0):
            tf.io.write_file(path, contents)
        context.async_wait()  # remote ops run asynchronously: wait until it is done
        return True

    def py_function() -> float:
        with tf.device(WORKER0):
            y = tf.py_function(func=lambda x: x * 2.0, inp=[tf.constant(2.0)], Tout=tf.float32)
        return float(y.numpy())

    def raw_py_func(token: str) -> list[float]:
        """EagerPyFunc named by token, forced onto the worker (whose Python may hold it)."""
        with tf.device(WORKER0):
            (y,) = tf.raw_ops.EagerPyFunc(input=[tf.constant(1.0)], token=token,
                                          Tout=[tf.float32])
        return y.numpy().tolist()

    return {f.__name__: f for f in (connect, eager_op, remote_function,
                                    remote_function_local_input, session, session_function,
                                    session_read_file, session_nested_read_file,
                                    session_big_constant,
                                    read_file, function_read_file, nested_read_file,
                                    write_file, py_function, raw_py_func)}


def _answer(result: dict[str, Any]) -> None:
    print(RESULT_MARK + json.dumps(result), flush=True)


def run_client(cluster: dict[str, list[str]]) -> None:
    import tensorflow as tf

    actions = _actions(tf, cluster)
    _answer({"ready": True})
    for line in sys.stdin:
        command = json.loads(line)
        try:
            value = actions[command["action"]](**command.get("args", {}))
            _answer({"ok": True, "value": value})
        except Exception as e:  # noqa: BLE001  (the harness reports what TF raised)
            _answer({"ok": False, "error": type(e).__name__, "message": str(e)[:800]})
            _clear_async_error()


def _clear_async_error() -> None:
    """A failed remote op leaves the eager executor in error; clear it for the next one."""
    from tensorflow.python.eager import context

    try:
        context.async_clear_error()
    except Exception:  # noqa: BLE001  (nothing to clear outside an eager context)
        pass


def run_server(cluster: dict[str, list[str]], job: str, task: int) -> None:
    import tensorflow as tf

    server = tf.distribute.Server(tf.train.ClusterSpec(cluster), job_name=job,
                                  task_index=task, protocol="grpc", start=True)
    _answer({"ready": True, "target": server.target})
    sys.stdin.read()  # the parent closes stdin to stop us


def main() -> None:
    config = json.loads(sys.argv[1])
    if config.get("isolated"):
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=30)
    start_relays(config["inboxes"], config["dials"])
    if config["role"] == "client":
        run_client(config["cluster"])
    else:
        run_server(config["cluster"], config["job"], config["task"])


if __name__ == "__main__":
    main()
