"""Port hygiene: one tfgate instance per host:port, and a one-line error when it is taken.

`serve --workers N` shares its port between its workers with SO_REUSEPORT, which would
also let a second tfgate (or any process of the same user that sets SO_REUSEPORT) bind
the same port and silently take part of the connections. So before serving, `claim`

1. takes an exclusive `flock` on a per-port file (`tfgate-<host>-<port>.lock` in the
   first writable one of /run/tfgate, /dev/shm and the system temp dir: /dev/shm stays
   writable in containers with a read-only root), held until this process exits, so that
   two supervisors starting at once cannot both pass step 2;
2. binds the address once without SO_REUSEPORT, which fails while any socket holds
   the port, SO_REUSEPORT or not (with SO_REUSEADDR, as gRPC binds: a connection left
   in TIME_WAIT owns nothing).

Either failing is a `ListenError`: "cannot listen on HOST:PORT: address already in use".
A single process needs only step 2 (`probe`), for the clear message: its own listener
never sets SO_REUSEPORT, so its bind is exclusive anyway.
The lock file is left behind on purpose: deleting it would let a racer lock a file that
a newcomer no longer sees.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pathlib
import re
import socket
import tempfile
from dataclasses import dataclass

RUN_DIR = pathlib.Path("/run/tfgate")
SHM_DIR = pathlib.Path("/dev/shm")


class ListenError(OSError):
    """The listen address cannot be had; the message is the whole story, one line."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"cannot listen on {address}: {reason}")


@dataclass
class PortClaim:
    """A held per-port lock; `release` (or process exit) gives it up."""

    lock_file: pathlib.Path
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def lock_dir() -> pathlib.Path:
    """The same answer for every tfgate of one user on one host, so that they meet."""
    for candidate in (RUN_DIR, SHM_DIR):
        if candidate.is_dir() and os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return pathlib.Path(tempfile.gettempdir())


def lock_file(host: str, port: int, directory: pathlib.Path | None = None) -> pathlib.Path:
    safe = re.sub(r"[^A-Za-z0-9.:_-]", "_", host)
    return (directory or lock_dir()) / f"tfgate-{safe}-{port}.lock"


def claim(address: str, host: str, port: int, directory: pathlib.Path | None = None) -> PortClaim:
    """Lock the port's file, then check nobody listens on it; ListenError otherwise."""
    path = lock_file(host, port, directory)
    try:  # O_NOFOLLOW: the temp dir is shared; never lock through someone's symlink
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ListenError(address, f"cannot open lock file {path}: {_reason(exc)}") from None
    held = PortClaim(path, fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        held.release()
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise ListenError(address, f"address already in use (another tfgate serve "
                                       f"holds {path})") from None
        raise ListenError(address, f"cannot lock {path}: {_reason(exc)}") from None
    try:
        probe(address, host, port)
    except BaseException:
        held.release()
        raise
    return held


def probe(address: str, host: str, port: int) -> None:
    """Bind every address `host` resolves to, once, without SO_REUSEPORT."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(address, f"cannot resolve {host}: {exc.strerror}") from None
    failures: list[OSError] = []
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                failures.append(exc)
    in_use = [f for f in failures if f.errno == errno.EADDRINUSE]
    # An address family the host lacks (no IPv6) is not fatal while another one binds.
    if in_use or (failures and len(failures) == len(infos)):
        raise ListenError(address, _reason((in_use or failures)[0]))


def _reason(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]
