"""`tfgate explain`: the policy's decision for a described call, as plain text."""

from __future__ import annotations

import argparse

from proxy.call import DEFAULT_SIGNATURE, ModelTarget, Principal
from proxy.config import Config
from proxy.errors import ConfigError
from proxy.policy import Policy
from proxy.routing import METHODS, resolve_method_pattern


def explain(cfg: Config, args: argparse.Namespace) -> str:
    try:
        paths = resolve_method_pattern(args.method)
    except ValueError as exc:
        raise ConfigError("--method", str(exc)) from None
    if len(paths) != 1:
        raise ConfigError("--method", f"{args.method!r} matches {len(paths)} methods; name one")
    (path,) = paths
    method = METHODS[path]
    principal = Principal(
        spiffe_id=args.spiffe, dns=tuple(args.dns), cn=args.cn,
        has_certificate=bool(args.spiffe or args.dns or args.cn),
        subject=args.sub, issuer=args.iss, scopes=frozenset(args.scope),
        has_token=bool(args.sub or args.iss or args.scope),
    )
    targets: tuple[ModelTarget, ...] = ()
    if method.addresses_model:
        if not args.model:
            raise ConfigError("--model", f"{method.name} addresses a model: give --model")
        signature = (args.signature or DEFAULT_SIGNATURE) if method.access.value == "data" else None
        targets = (ModelTarget(args.model, args.version, args.label, signature),)
    decision = Policy(cfg.policy).decide(principal, path, targets)
    verdict = "ALLOW" if decision.allowed else "DENY"
    lines = [f"{verdict} {path}", f"  principal: {principal.display()}"]
    if targets:
        t = targets[0]
        lines.append(f"  model: {t.name} version: {t.version_text()} signature: {t.signature}")
    lines.append(f"  reason: {decision.reason.value}")
    lines.append(f"  rule: {decision.rule}" if decision.allowed else f"  why: {decision.message}")
    return "\n".join(lines)
