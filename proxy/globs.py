"""The one glob dialect of a tfgate config: rule principals, models, routes, limits overrides.

A name is split into segments by a separator: `/` for SPIFFE IDs, method paths, model and
signature names, CNs and token claims; `.` for DNS names, so that `*.example.org` matches
one label, as a TLS wildcard certificate does (`a.example.org`, not `a.b.example.org`).

- `*`: any run of characters within one segment (never the separator), also the empty run.
- `**`: any run of characters, separators included (three or more `*` are the same).
- `?`: exactly one character that is not the separator.
- `[abc]`, `[a-z]`, `[!abc]`: one character in (or, with `!`, not in) the class; a class
  never matches the separator. `]` first in a class is a member; `[^...]`, POSIX classes
  (`[[:alpha:]]`), reversed ranges, a class that names the separator and an unterminated
  `[` are ValueErrors, not silently literal as in fnmatch.
- Everything else is literal, regex metacharacters and `\\` included. Case-sensitive; the
  whole name must match. On names without the separator (model names, most CNs) this is
  `fnmatch.fnmatchcase`, apart from the stricter classes.

`compile_globs` turns a list of patterns into one compiled regex (alternatives) whose
`fullmatch` and `match` both test a whole name. Matching time is linear in the name for any
pattern: each run between stars is matched at its earliest place inside an atomic group, and
after a `**` the engine only backtracks over the segment the next run lands in. Names come
from requests (model and signature names), so no pattern may make them quadratic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

SEGMENTS = "/"
DNS_LABELS = "."

_ONE, _ANY = "*", "**"  # the two kinds of star, as tokens


@dataclass(frozen=True)
class _Syntax:
    pattern: str
    sep: str

    def fail(self, problem: str) -> ValueError:
        return ValueError(f"glob {self.pattern!r}: {problem}")


def _char_class(syntax: _Syntax, start: int) -> tuple[str, int]:
    """The regex for the class opening at `start`, and the index just past its `]`."""
    p, sep = syntax.pattern, re.escape(syntax.sep)
    i = start + 1
    negate = i < len(p) and p[i] == "!"
    i += negate
    if i < len(p) and p[i] == "^":
        raise syntax.fail(f"'[^' at {start} is ambiguous; write '[!...]' to negate")
    members: list[str] = []
    while True:
        if i >= len(p):
            raise syntax.fail(f"unterminated character class at {start}")
        c = p[i]
        if c == "]" and members:
            break
        if c == "[" and p[i + 1:i + 2] in (":", ".", "="):
            raise syntax.fail(f"POSIX character classes are not supported (at {i})")
        if i + 2 < len(p) and p[i + 1] == "-" and p[i + 2] != "]":
            if c > p[i + 2]:
                raise syntax.fail(f"reversed range {c}-{p[i + 2]} at {i}")
            members.append(f"{re.escape(c)}-{re.escape(p[i + 2])}")
            i += 3
            continue
        if c == syntax.sep:
            raise syntax.fail(f"a class never matches the separator {syntax.sep!r} (at {i})")
        members.append(re.escape(c))
        i += 1
    body = "".join(members)
    return (f"[^{body}{sep}]" if negate else f"(?!{sep})[{body}]"), i + 1


def _tokens(syntax: _Syntax) -> list[str]:
    """Stars as `_ONE`/`_ANY`; every other token is the regex of one fixed-width atom."""
    p, out, i = syntax.pattern, [], 0
    not_sep = f"[^{re.escape(syntax.sep)}]"
    while i < len(p):
        if p[i] == "*":
            run = len(p[i:]) - len(p[i:].lstrip("*"))
            out.append(_ANY if run > 1 else _ONE)
            i += run
        elif p[i] == "?":
            out.append(not_sep)
            i += 1
        elif p[i] == "[":
            atom, i = _char_class(syntax, i)
            out.append(atom)
        else:
            out.append(re.escape(p[i]))
            i += 1
    return out


def _split(tokens: list[str], star: str) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    for token in tokens:
        if token == star:
            parts.append([])
        else:
            parts[-1].append(token)
    return parts


def _chunk(pieces: list[str], sep: str, *, first: bool, last: bool) -> str:
    """One run between `**`s: `pieces` are the fixed-width runs between its single stars.

    Placing a piece at its earliest spot is never worse when a single star follows and the
    piece was reached without crossing a separator, or when a `**` follows; so pieces are
    atomic. After a `**` only the segment where the chunk starts is a real choice: it is
    tried segment by segment (earliest first) and the first that fits is kept.
    """
    one = f"[^{re.escape(sep)}]"
    end = r"\Z" if last else ""
    if len(pieces) == 1:
        if first:
            return pieces[0] + end
        return f".*{pieces[0]}{end}" if last else f"(?>.*?{pieces[0]})"
    head = pieces[0] if first else f"(?:.*?{re.escape(sep)})??(?>{one}*?{pieces[0]})"
    middle = "".join(f"(?>{one}*?{piece})" for piece in pieces[1:-1])
    tail = f"{one}*{pieces[-1]}{end}" if last else f"(?>{one}*?{pieces[-1]})"
    return head + middle + tail if first else f"(?>{head}{middle}{tail})"


def translate(pattern: str, separator: str = SEGMENTS) -> str:
    """The regex source for one pattern; it matches a whole name (ends with \\Z)."""
    if len(separator) != 1:
        raise ValueError(f"a glob separator is one character, not {separator!r}")
    chunks = _split(_tokens(_Syntax(pattern, separator)), _ANY)
    body = "".join(
        _chunk(["".join(piece) for piece in _split(chunk, _ONE)], separator,
               first=i == 0, last=i == len(chunks) - 1)
        for i, chunk in enumerate(chunks))
    return f"(?s:{body})"  # `**` matches a newline too


def compile_globs(patterns: Iterable[str], separator: str = SEGMENTS) -> re.Pattern[str]:
    """One regex matching a whole name that any of `patterns` matches (none: nothing).
    Raises ValueError naming the pattern when one is invalid."""
    alternatives = [translate(p, separator) for p in patterns]
    return re.compile("|".join(alternatives) or "(?!)")
