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
