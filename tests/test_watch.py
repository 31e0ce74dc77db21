"""proxy.watch: contents fingerprints see every way a file is replaced (in place with the
same size and timestamp, rename over it, a Kubernetes `..data` symlink swap), never block
on a FIFO, and the watcher reports a change once, after it has settled."""

from __future__ import annotations

import os
import pathlib
import threading
import time

from proxy import watch
from tests.serveproc import wait_until


def test_same_size_same_mtime_rewrite_is_seen(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "server.pem"
    path.write_bytes(b"A" * 100)
    before = watch.fingerprint([path])
    info = path.stat()
    path.write_bytes(b"B" * 100)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))  # timestamps say nothing changed
    assert watch.fingerprint([path]) != before


def test_kubernetes_data_symlink_swap_is_seen(tmp_path: pathlib.Path) -> None:
    """`tls.crt -> ..data/tls.crt`, `..data -> ..v1`: renaming a new `..data` over the old
    one changes what the unchanged path reads."""
    for version, data in (("..v1", b"one"), ("..v2", b"two")):
        (tmp_path / version).mkdir()
        (tmp_path / version / "tls.crt").write_bytes(data)
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "tls.crt").symlink_to("..data/tls.crt")
    path = tmp_path / "tls.crt"
    before = watch.fingerprint([path])
    (tmp_path / "..data_tmp").symlink_to("..v2")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    after = watch.fingerprint([path])
    assert after != before and path.read_bytes() == b"two"


def test_missing_and_special_files(tmp_path: pathlib.Path) -> None:
    """A missing file reads as None; a FIFO nobody writes is fingerprinted without
    blocking (by its type), so the watcher never hangs."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    found: dict = {}
    reader = threading.Thread(target=lambda: found.update(watch.fingerprint(
        [fifo, tmp_path / "absent"])), daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive()
    assert found[tmp_path / "absent"] is None
    assert found[fifo] is not None and b"not a regular file" in found[fifo]


def test_watcher_reports_a_settled_change_once(tmp_path: pathlib.Path) -> None:
    """One change to one of two files: one callback naming that file; the callee sets
    the new baseline (as a reload does), and no further callback follows."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"1")
    b.write_bytes(b"1")
    calls: list[list[pathlib.Path]] = []

    def on_change(changed: list[pathlib.Path]) -> None:
        calls.append(changed)
        watcher.watch(watch.fingerprint([a, b]))

    watcher = watch.Watcher(0.02, on_change)
    watcher.watch(watch.fingerprint([a, b]))
    watcher.start()
    try:
        b.write_bytes(b"2")
        wait_until(lambda: calls, "the change to be reported")
        time.sleep(10 * watcher.interval_s)  # not an assertion: room for a wrong repeat
    finally:
        watcher.stop()
    assert calls == [[b]]

