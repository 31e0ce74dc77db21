"""Warnings for a valid config that probably does not say what its author meant.

Validation (the pydantic models and the policy compiler) refuses what cannot work; this
module finds what works differently than it reads: a rule that can never match, or one
that matches more than it seems to. Each finding is a `LintWarning` (key path, message).
`tfgate check` prints them (`--strict` makes them errors, exit 2) and `tfgate serve` logs
them at start. Pure: it reads a Config and the method table, nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

from proxy.config import Config, Rule
from proxy.families import Access, Method
from proxy.families.serving import HEALTH_SERVICE
from proxy.globs import compile_globs
from proxy.routing import MethodTable

_ANY = "*"


class LintWarning(NamedTuple):
    path: str     # e.g. policy.rules[2].principals.scopes
    message: str


def lint(cfg: Config, methods: MethodTable | None = None) -> list[LintWarning]:
    """Every warning for `cfg`, in document order. `methods` defaults to the table the
    config's upstreams give (as `tfgate serve` builds it)."""
    table = methods or MethodTable.for_config(cfg)
    found: list[LintWarning] = []
    names: dict[str, int] = {}
    for i, rule in enumerate(cfg.policy.rules):
        where = f"policy.rules[{i}]"
        found += _whitespace(rule, where)
        if rule.name is not None:
            if rule.name in names:
                found.append(LintWarning(f"{where}.name", f"{rule.name!r} is also the name "
                                         f"of rules[{names[rule.name]}]: audit lines and "
                                         "`tfgate explain` cannot tell them apart"))
            names.setdefault(rule.name, i)
        found += _issuers(cfg, rule, where)
        found += _spiffe(rule, where)
        found += _listener(cfg, rule, where)
        found += _admin_globs(rule, table, where)
        found += _health_grants(rule, table, where)
        found += _unused_targets(rule, _granted(rule, table), where)
    for i, route in enumerate(cfg.routes):
        found += _spaced(route.models, f"routes[{i}].models")
    found += _spaced(cfg.identity.strip_metadata, "identity.strip_metadata")
    return found


def _spaced(values: list[str], where: str) -> Iterator[LintWarning]:
    for j, value in enumerate(values):
        if any(c.isspace() for c in value):
            yield LintWarning(f"{where}[{j}]", f"{value!r} holds whitespace; names and "
                              "patterns match exactly, so it most likely never matches")


def _whitespace(rule: Rule, where: str) -> Iterator[LintWarning]:
    if rule.name is not None and any(c.isspace() for c in rule.name):
        yield LintWarning(f"{where}.name", f"{rule.name!r} holds whitespace")
    p = rule.principals
    for field in ("spiffe", "dns", "cn", "sub", "iss", "scopes"):
        yield from _spaced(getattr(p, field), f"{where}.principals.{field}")
    yield from _spaced(rule.methods, f"{where}.methods")
    yield from _spaced(rule.models, f"{where}.models")
    yield from _spaced(rule.signatures, f"{where}.signatures")
    for j, version in enumerate(rule.versions):
        if isinstance(version, str) and any(c.isspace() for c in version):
            yield LintWarning(f"{where}.versions[{j}]", f"label {version!r} holds whitespace")


def _issuers(cfg: Config, rule: Rule, where: str) -> Iterator[LintWarning]:
    """A `sub` or `scopes` matcher means "of this issuer" only if `iss` says which."""
    jwt = cfg.authn.jwt
    if jwt is None:
        return  # a token matcher without authn.jwt is a validation error already
    trusted = [i.issuer for i in jwt.issuers]
    p = rule.principals
    if not p.iss and len(trusted) > 1:
        for field in ("sub", "scopes"):
            if getattr(p, field):
                yield LintWarning(f"{where}.principals.{field}", f"matches a token from any "
                                  f"of the {len(trusted)} trusted issuers; add `iss` to say "
                                  "whose")
    for j, pattern in enumerate(p.iss):
        if not _matches_any(pattern, trusted):
            yield LintWarning(f"{where}.principals.iss[{j}]", f"{pattern!r} matches none of "
                              "the trusted issuers (authn.jwt.issuers): the rule never matches")


def _spiffe(rule: Rule, where: str) -> Iterator[LintWarning]:
    for j, pattern in enumerate(rule.principals.spiffe):
        if not pattern.startswith("spiffe://"):
            yield LintWarning(f"{where}.principals.spiffe[{j}]", f"{pattern!r} does not start "
                              "with spiffe://, as every SPIFFE ID does: it never matches")
        elif (domain := pattern[len("spiffe://"):].split("/", 1)[0]) != domain.lower():
            yield LintWarning(f"{where}.principals.spiffe[{j}]", f"trust domain {domain!r} "
                              "has capitals; SPIFFE trust domains are lowercase: it never "
                              "matches")


def _listener(cfg: Config, rule: Rule, where: str) -> Iterator[LintWarning]:
    """Certificate matchers on a listener that never sees a client certificate."""
    if cfg.listen.requires_certificates():
        return
    if rule.principals.needs_certificate():
        yield LintWarning(f"{where}.principals", "matches certificate identities (spiffe, "
                          "dns or cn), but the listener asks for no client certificate: the "
                          "rule never matches")
    elif "certificate" in rule.require:
        yield LintWarning(f"{where}.require", "requires a certificate, but the listener asks "
                          "for none: the rule never matches")


def _admin_globs(rule: Rule, table: MethodTable, where: str) -> Iterator[LintWarning]:
    """A glob over a service with admin methods reads as if it granted them; it never
    does (`/tensorflow.serving.ModelService/*` leaves out HandleReloadConfigRequest)."""
    admin = [m for m in table.methods.values() if m.access is Access.ADMIN]
    named = {m.path for m in _granted(rule, table, globs=False)}
    for j, pattern in enumerate(rule.methods):
        if not any(c in pattern for c in "*?["):
            continue
        glob = _glob(pattern)
        left_out = [m.name for m in admin if glob is not None and glob.fullmatch(m.path)
                    and m.path not in named]
        if left_out:
            yield LintWarning(f"{where}.methods[{j}]", f"{pattern!r} does not grant the admin "
                              f"method(s) {', '.join(left_out)} (a glob never does); name them "
                              "if they are meant")


def _health_grants(rule: Rule, table: MethodTable, where: str) -> Iterator[LintWarning]:
    """A method pattern that grants only gRPC Health: tfgate answers Health itself,
    before admission, so no rule is ever consulted for it (docs/operations.md#health)."""
    for j, pattern in enumerate(rule.methods):
        try:
            paths = table.resolve(pattern)
        except ValueError:
            continue  # an error the policy compiler reports
        if paths and all(p.startswith(HEALTH_SERVICE) for p in paths):
            yield LintWarning(f"{where}.methods[{j}]", f"{pattern!r} grants only gRPC Health, "
                              "which tfgate answers itself without credentials or a rule: "
                              "this grant is never used")


def _unused_targets(rule: Rule, granted: list[Method], where: str) -> Iterator[LintWarning]:
    """models, versions or signatures for methods that carry none of them."""
    if not granted:
        return  # the policy compiler reports methods that match nothing
    names = ", ".join(sorted(m.name for m in granted))
    given = rule.model_fields_set
    if rule.models and not any(m.addresses_model for m in granted):
        yield LintWarning(f"{where}.models", f"no granted method ({names}) names a model")
    if "versions" in given and rule.versions != [_ANY] and not any(
            m.addresses_model for m in granted):
        yield LintWarning(f"{where}.versions", f"no granted method ({names}) names a version")
    if "signatures" in given and rule.signatures != [_ANY] and not any(
            m.access is Access.DATA for m in granted):
        yield LintWarning(f"{where}.signatures", f"no granted method ({names}) carries a "
                          "signature (metadata and status requests name none)")


def _granted(rule: Rule, table: MethodTable, *, globs: bool = True) -> list[Method]:
    paths: set[str] = set()
    for pattern in rule.methods:
        if not globs and any(c in pattern for c in "*?["):
            continue
        try:
            paths |= table.resolve(pattern)
        except ValueError:
            continue  # an error the policy compiler reports
    return [table.methods[p] for p in sorted(paths)]


def _glob(pattern: str) -> re.Pattern[str] | None:
    try:
        return compile_globs([pattern])
    except ValueError:
        return None


def _matches_any(pattern: str, values: list[str]) -> bool:
    glob = _glob(pattern)
    return glob is None or any(glob.fullmatch(v) for v in values)
