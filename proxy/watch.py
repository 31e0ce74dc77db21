"""Watch the config file and every file it names, by polling their contents.

Why polling, and why contents:
- Kubernetes mounts a ConfigMap or Secret as `name -> ..data/name`, and updates it by
  writing a new timestamped directory and renaming a new `..data` symlink over the old
  one. The path a config names never changes; its target does. An inotify watch on the
  file follows the old inode and misses the swap; catching it needs a watch on the
  directory (and on the parent of every symlink hop), which is fiddly and Linux-only.
- Reading a path follows every symlink to whatever it points at now, so hashing what
  `open(path)` returns sees a symlink swap, a rename over the file (`mv`, most editors,
  cert-manager's writers) and an in-place rewrite alike, whatever the file system's
  timestamp granularity. The files are small (a config, PEM files, a JWKS): one poll reads
  a few KB; tfgate adds no dependency for it.
- A change counts once the same new contents are seen on two polls in a row, so a file
  caught half-written, or a certificate replaced a moment before its key, does not make a
  reload that is bound to fail.
Only regular files are read (a FIFO would block the watcher); others count by their type.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import stat
import threading
from collections.abc import Callable, Iterable

# path -> digest of what reading it returns now (None: missing or unreadable)
Fingerprint = dict[pathlib.Path, bytes | None]


def fingerprint(paths: Iterable[pathlib.Path]) -> Fingerprint:
    return {path: _digest(path) for path in paths}


def _digest(path: pathlib.Path) -> bytes | None:
    try:
        with open(path, "rb", opener=_nonblocking) as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):
                return f"not a regular file ({stat.S_IFMT(info.st_mode):o})".encode()
            return hashlib.sha256(fh.read()).digest()
    except OSError:
        return None


def _nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK)  # opening a FIFO must not wait for a writer


class Watcher:
    """Polls the paths of its baseline every `interval_s` in a daemon thread and calls
    `on_change(changed_paths)` when their contents have changed and settled. The callee
    (a reload) sets the next baseline with `watch`: the fingerprint taken *before* it read
    the files, so a change made while it was reading is seen on a later poll."""

    def __init__(self, interval_s: float, on_change: Callable[[list[pathlib.Path]], None]) -> None:
        self.interval_s = interval_s
        self._on_change = on_change
        self._baseline: Fingerprint = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tfgate-watch", daemon=True)

    def watch(self, baseline: Fingerprint) -> None:
        with self._lock:
            self._baseline = dict(baseline)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        pending: Fingerprint | None = None  # new contents seen once, not yet settled
        while not self._stopped.wait(self.interval_s):
            with self._lock:
                baseline = self._baseline
            now = fingerprint(baseline)
            if now == baseline or now != pending:
                pending = None if now == baseline else now
                continue
            pending = None
            self._on_change([path for path, digest in now.items() if baseline[path] != digest])
