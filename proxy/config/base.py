"""What every config section shares: the base class, units, and the value types that
check themselves (file paths resolved beside the config file, listen/upstream addresses)."""

from __future__ import annotations

import ipaddress
import pathlib
from typing import Annotated

import pydantic
from pydantic import BaseModel, ConfigDict, ValidationInfo

MiB = 1024 * 1024
GRPC_MAX_MESSAGE = 2**31 - 1  # gRPC's own message ceiling; nothing decodes past it


class Section(BaseModel):
    """A config section: frozen (a State never changes under a call), unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def files(self) -> list[pathlib.Path]:
        """Every file this section and the sections below it name (certificates, keys,
        CAs, JWKS): what a reload reads again, and what the file watcher watches."""
        found: list[pathlib.Path] = []
        for name in type(self).model_fields:
            _collect_files(getattr(self, name), found)
        return found


def _collect_files(value: object, found: list[pathlib.Path]) -> None:
    if isinstance(value, pathlib.Path):
        if value not in found:
            found.append(value)
    elif isinstance(value, Section):
        found.extend(f for f in value.files() if f not in found)
    elif isinstance(value, list | tuple):
        for item in value:
            _collect_files(item, found)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_files(item, found)


class KeyProblem(ValueError):
    """Raised by a validator that checks several keys, to name the one at fault:
    `key` is its path below the validated section, e.g. ("routes", 1, "upstream")."""

    def __init__(self, key: tuple[int | str, ...], problem: str) -> None:
        super().__init__(problem)
        self.key = key


def _resolve_file(value: pathlib.Path, info: ValidationInfo) -> pathlib.Path:
    base = (info.context or {}).get("base_dir")
    path = value if value.is_absolute() or base is None else pathlib.Path(base) / value
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    return path


FilePath = Annotated[pathlib.Path, pydantic.AfterValidator(_resolve_file)]


def parse_address(address: str) -> tuple[str, str | None, int | None]:
    """Split `host:port`, `[v6]:port` or `unix:/path` into (kind, host, port)."""
    if address.startswith("unix:"):
        if len(address) <= len("unix:"):
            raise ValueError("unix socket address needs a path, e.g. unix:/run/tfgate.sock")
        return "unix", None, None
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port or unix:PATH, got {address!r}")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError(f"put an IPv6 host in brackets, e.g. [::1]:8443, got {address!r}")
    return "tcp", host.strip("[]"), int(port)


def is_loopback(address: str) -> bool:
    kind, host, _ = parse_address(address)
    if kind == "unix" or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _check_address(value: str) -> str:
    parse_address(value)
    return value


Address = Annotated[str, pydantic.AfterValidator(_check_address)]
