"""One glob compiler for the whole config: rules, routes and limit overrides.

A list of patterns becomes one compiled regex (any pattern may match); patterns are
case-sensitive and match whole values. `*` matches any run of characters, `?` one,
`[...]` a class; everything else is literal.
"""

from __future__ import annotations

import fnmatch
import re


def compile_globs(patterns: list[str]) -> re.Pattern[str]:
    """One regex matching any of `patterns` in full (use `.fullmatch`)."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))
