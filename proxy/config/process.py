"""`audit:` and `server:`: where audit events go and how the process serves (drain,
reload)."""

from __future__ import annotations

import pathlib

import pydantic
from pydantic import Field, ValidationInfo

from proxy.config.base import Section


class Audit(Section):
    """One JSON event per call."""

    output: str = Field("stderr", description="`stdout`, `stderr`, or a file path to append to.")
    unauthenticated_per_s: float = Field(
        100, ge=0, description="Events per second, per process, for calls refused before "
        "the caller was identified (no or bad credentials, overload before the headers were "
        "judged): a stranger cannot grow the audit log faster than this. Past it (burst: one "
        "second's worth) such events are counted, not written, and one `audit_suppressed` "
        "event per second at most gives their count by reason. 0: none are written, only "
        "counted. Identified callers' calls are always written; metrics count every call.")

    @pydantic.field_validator("output")
    @classmethod
    def _beside_config(cls, value: str, info: ValidationInfo) -> str:
        base = (info.context or {}).get("base_dir")
        if value in ("stdout", "stderr") or base is None:
            return value
        return str(pathlib.Path(base) / value)


class Server(Section):
    """Process model."""

    grace_s: float = Field(
        5.0, ge=0, description="Drain time on SIGTERM before cancelling calls. Read when "
        "the signal arrives, so a reload changes it.")
    watch_interval_s: float | None = Field(
        2.0, ge=0.05, le=3600, description="How often the config file and every file it "
        "names (certificates, keys, CAs, JWKS) are checked for changes; a change reloads "
        "the config (docs/operations.md). Null: reload on SIGHUP only. Fixed at start.")
