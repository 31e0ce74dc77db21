"""`logging:` tfgate's own operational log (start, reload, drain, stop, errors).

It is separate from the audit stream (`audit:`, one event per call): operational lines
go to stderr, in the format and from the level chosen here. `cli.py` applies it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from proxy.config.base import Section


class Logging(Section):
    """tfgate's operational log on stderr (not the audit log)."""

    format: Literal["console", "json"] = Field(
        "console", description="`console`: one readable line per event "
        "(`tfgate: reload outcome=ok ...`). `json`: one JSON object per line with "
        "`event`, `level`, `timestamp` and `logger: tfgate`, for a log agent.")
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Lowest level written. Start, reload, drain and stop are "
        "`info` (a refused reload is `error`).")
