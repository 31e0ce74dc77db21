"""Tests for proxy.globs: one glob dialect, segment-aware, compiled into one regex.

The dialect is also checked against a small reference matcher written straight from the
rules in the module docstring (a memoized recursion over the pattern), on random patterns
and names.
"""

from __future__ import annotations

import fnmatch
import functools
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.globs import DNS_LABELS, compile_globs, translate


def matches(pattern: str, name: str, separator: str = "/") -> bool:
    return compile_globs([pattern], separator).fullmatch(name) is not None


class TestSegments:
    def test_star_stays_in_its_segment(self) -> None:
        """`team-a/*` is team-a's direct children only."""
        team = "spiffe://td/ns/team-a/*"
        assert matches(team, "spiffe://td/ns/team-a/alice")
        assert matches(team, "spiffe://td/ns/team-a/")  # `*` may be empty
        assert not matches(team, "spiffe://td/ns/team-a/sa/x")
        assert not matches(team, "spiffe://td/ns/team-a")

    def test_double_star_crosses_segments(self) -> None:
        """`**` says so: any depth, including none."""
        team = "spiffe://td/ns/team-a/**"
        assert matches(team, "spiffe://td/ns/team-a/sa/x")
        assert matches(team, "spiffe://td/ns/team-a/x")
        assert matches(team, "spiffe://td/ns/team-a/")
        assert not matches(team, "spiffe://td/ns/team-b/x")
        assert not matches(team, "spiffe://td/ns/team-a")
        assert matches("**", "a/b/c") and matches("**", "")

    def test_star_inside_a_segment(self) -> None:
        """A star may sit inside a segment and still not leave it."""
        assert matches("spiffe://td/ns/team-*/sa", "spiffe://td/ns/team-a/sa")
        assert not matches("spiffe://td/ns/team-*/sa", "spiffe://td/ns/team-a/evil/sa")
        assert matches("spiffe://*/ns/a", "spiffe://any.td/ns/a")
        assert not matches("spiffe://*/ns/a", "spiffe://td/x/ns/a")

    def test_double_star_then_star(self) -> None:
        """After `**`, a single star still keeps to one segment, wherever `**` stopped."""
        assert matches("a**b*c", "ab/bc")  # ** = "b/", then b, * = "", c
        assert matches("a**b*c", "a/x/bxxc")
        assert not matches("a**b*c", "ab/xc")
        assert matches("**/sa/*", "spiffe://td/ns/a/sa/x")
        assert not matches("**/sa/*", "spiffe://td/ns/a/sa/x/y")

    def test_more_stars_are_double(self) -> None:
        assert matches("a***b", "a/x/b") and matches("a****", "a/x")

    def test_question_mark_is_one_non_separator(self) -> None:
        assert matches("a?c", "abc")
        assert not matches("a?c", "a/c")
        assert not matches("a?c", "ac") and not matches("a?c", "abbc")

    def test_names_without_separators_behave_like_fnmatchcase(self) -> None:
        """Model names and CNs: the old fnmatch behaviour, case-sensitive."""
        for pattern, name in [("vision-*", "vision-resnet"), ("*", "m"), ("m?", "m1"),
                              ("[a-c]x", "bx"), ("[!a]x", "bx"), ("fraud-*", "fraud"),
                              ("Churn", "churn"), ("*-v[0-9]", "m-v3"), ("a*b*c", "aXbYc")]:
            assert matches(pattern, name) == fnmatch.fnmatchcase(name, pattern), (pattern, name)


class TestDnsLabels:
    """With `.` as separator a star is one label, like a TLS wildcard certificate."""

    def test_wildcard_is_one_label(self) -> None:
        assert matches("*.example.org", "batch.example.org", DNS_LABELS)
        assert not matches("*.example.org", "a.batch.example.org", DNS_LABELS)
        assert not matches("*.example.org", "example.org", DNS_LABELS)
        assert not matches("*.example.org", "evil-example.org", DNS_LABELS)

    def test_double_star_spans_labels(self) -> None:
        assert matches("**.example.org", "a.b.example.org", DNS_LABELS)
        assert not matches("**.example.org", "example.org", DNS_LABELS)

    def test_slash_is_ordinary_there(self) -> None:
        assert matches("a*", "a/b", DNS_LABELS)
        assert not matches("a?", "a.", DNS_LABELS)


class TestLiterals:
    @pytest.mark.parametrize("pattern", ["a.b", "a+b", "(a)", "a|b", "^a$", "a{2}", "a\\b",
                                         "a\\", "a]", "{x}", "a\\Z", "(?i)a", "$", ".", "\\d"])
    def test_regex_metacharacters_are_literal(self, pattern: str) -> None:
        """Only `*`, `?` and `[` are special; `\\` escapes nothing and is itself literal."""
        assert matches(pattern, pattern)
        assert not matches(pattern, pattern + "x") and not matches(pattern, "x" + pattern)
        assert not matches(".", "a") and not matches("a.b", "axb") and not matches("\\d", "1")
        assert not matches("(?i)a", "A") and not matches("a|b", "a")

    def test_escaped_star_is_still_a_star(self) -> None:
        """`\\*` is a backslash then a star (fnmatch's reading), not an escaped star."""
        assert matches("a\\*", "a\\xyz") and not matches("a\\*", "a*x/")

    def test_case_sensitive(self) -> None:
        assert matches("Model", "Model") and not matches("Model", "model")
        assert not matches("[a-z]", "A")

    def test_whole_name(self) -> None:
        """No partial matches, including before a trailing newline."""
        assert not matches("abc", "abcd") and not matches("abc", "xabc")
        assert not matches("abc", "abc\n")
        assert compile_globs(["abc"]).match("abc\n") is None

    def test_newlines_are_characters(self) -> None:
        assert matches("a*b", "a\nb") and matches("a**b", "a\n/b") and matches("a?b", "a\nb")


class TestClasses:
    def test_ranges_and_sets(self) -> None:
        assert matches("v[0-9]", "v7") and not matches("v[0-9]", "vx")
        assert matches("[abc]", "b") and not matches("[abc]", "d")
        assert matches("[!abc]", "d") and not matches("[!abc]", "a")
        assert matches("[]a]", "]") and matches("[!]a]", "b") and not matches("[!]a]", "]")
        assert matches("[a-]", "-") and matches("[-a]", "-")
        assert matches("[\\]", "\\")  # a backslash is a member, not an escape

    def test_class_never_matches_the_separator(self) -> None:
        """Not by a range that spans it, not negated."""
        assert matches("a[+-0]b", "a.b") and not matches("a[+-0]b", "a/b")  # '/' is 0x2f
        assert not matches("a[!x]b", "a/b")
        assert not matches("a[+-/]b", "a.b", DNS_LABELS)
        assert matches("a[+-/]b", "a/b", DNS_LABELS)

    @pytest.mark.parametrize(("pattern", "problem"), [
        ("a[bc", "unterminated"), ("a[", "unterminated"), ("[]", "unterminated"),
        ("[!]", "unterminated"), ("[^a]", "ambiguous"), ("[z-a]", "reversed range"),
        ("[[:alpha:]]", "POSIX"), ("[a/]", "separator"), ("x[!/]", "separator"),
    ])
    def test_invalid_classes_are_value_errors(self, pattern: str, problem: str) -> None:
        """A clear error naming the pattern, never a silent literal `[`."""
        with pytest.raises(ValueError, match=problem) as info:
            compile_globs(["ok", pattern])
        assert repr(pattern) in str(info.value)

    def test_separator_in_dns_class(self) -> None:
        with pytest.raises(ValueError, match="separator"):
            compile_globs(["[a.]"], DNS_LABELS)
        assert matches("[a/]", "/", DNS_LABELS)


class TestCompile:
    def test_list_is_one_alternation(self) -> None:
        glob = compile_globs(["a/*", "b/**", "c"])
        assert [bool(glob.fullmatch(n)) for n in ["a/x", "a/x/y", "b/x/y", "c", "d"]] == [
            True, False, True, True, False]

    def test_empty_list_matches_nothing(self) -> None:
        glob = compile_globs([])
        assert glob.fullmatch("") is None and glob.fullmatch("a") is None

    def test_separator_is_one_character(self) -> None:
        with pytest.raises(ValueError, match="one character"):
            translate("a", "::")

    def test_translate_carries_its_flags(self) -> None:
        """The source stands alone: `**` matches a newline without re.DOTALL."""
        import re
        assert re.fullmatch(translate("a**"), "a\n/x")


def _reference(pattern: str, name: str, sep: str) -> bool:
    """The rules of the module docstring, directly: a memoized recursion."""
    tokens: list[object] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "*":
            run = len(pattern[i:]) - len(pattern[i:].lstrip("*"))
            tokens.append("**" if run > 1 else "*")
            i += run
        elif pattern[i] == "[":
            end = pattern.index("]", i + 2 + (pattern[i + 1] == "!"))
            body = pattern[i + 1:end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            chars = set()
            k = 0
            while k < len(body):
                if k + 2 < len(body) and body[k + 1] == "-":
                    chars |= {chr(c) for c in range(ord(body[k]), ord(body[k + 2]) + 1)}
                    k += 3
                else:
                    chars.add(body[k])
                    k += 1
            tokens.append(lambda c, s=frozenset(chars), n=negate: c != sep and ((c in s) != n))
            i = end + 1
        elif pattern[i] == "?":
            tokens.append(lambda c: c != sep)
            i += 1
        else:
            tokens.append(lambda c, lit=pattern[i]: c == lit)
            i += 1

    @functools.cache
    def at(t: int, n: int) -> bool:
        if t == len(tokens):
            return n == len(name)
        token = tokens[t]
        if token == "**":
            return any(at(t + 1, m) for m in range(n, len(name) + 1))
        if token == "*":
            m = n
            while True:
                if at(t + 1, m):
                    return True
                if m == len(name) or name[m] == sep:
                    return False
                m += 1
        return n < len(name) and token(name[n]) and at(t + 1, n + 1)  # type: ignore[operator]

    return at(0, 0)


_PIECES = st.sampled_from(["a", "b", "/", ".", "*", "**", "?", "[ab]", "[!a]", "[+-0]", "\\"])


@settings(max_examples=2000, deadline=None)
@given(pattern=st.lists(_PIECES, max_size=7).map("".join),
       name=st.text(alphabet="ab/.c+\\", max_size=10), sep=st.sampled_from(["/", "."]))
def test_agrees_with_the_reference(pattern: str, name: str, sep: str) -> None:
    """The compiled regex (atomic groups and all) decides exactly as the plain rules do."""
    glob = compile_globs([pattern], sep)
    assert (glob.fullmatch(name) is not None) == _reference(pattern, name, sep)


def test_matching_time_is_linear_hang_guard() -> None:
    """Names come from requests: patterns that would backtrack quadratically in a naive
    translation finish on a 200 kB name (checked in a subprocess with a timeout, as a
    hang guard: a quadratic engine needs hours here)."""
    script = (
        "from proxy.globs import compile_globs\n"
        "name = 'a' * 100_000 + '/' + 'a' * 100_000\n"
        "for p in ['**a*b', '*a*a*a*b', 'a**a*a**a*b', '**/a*b', '*a*a*a/**a*a*b', '**a**b']:\n"
        "    assert compile_globs([p]).fullmatch(name) is None, p\n"
        "slashes = 'a/' * 100_000\n"
        "for p in ['**a*b', '**a/*b', 'a**a*a**a*b']:\n"
        "    assert compile_globs([p]).fullmatch(slashes) is None, p\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.stdout.strip() == "ok", done.stderr
