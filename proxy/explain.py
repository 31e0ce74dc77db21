"""`tfgate explain`: the decision the admission path would take for a described call.

The caller's identity and the request's facts come from the command line instead of
credentials and a body; the rest is `admission.decide`, the data path's own code. With a
`shadow_policy`, its decision for the same call is shown too (never enforced). For a
distributed-TF method, `--op` and `--address` describe what the request would run and
dial; handle ownership is state of a running tfgate, so explain does not judge it. A REST
request line (`--rest 'POST /v1/models/m:predict'`) is routed by the REST front's own
`rest/paths.py` into the gRPC method and model it is judged as."""

from __future__ import annotations

import argparse
import dataclasses

from proxy import admission
from proxy.call import DEFAULT_SIGNATURE, Facts, ModelTarget, Principal
from proxy.config import Config
from proxy.errors import ConfigError, Reject
from proxy.families import Access, Method
from proxy.inspect.distributed import Address, ClusterFacts, OpUse
from proxy.policy import Decision
from proxy.rest import paths as rest_paths
from proxy.routing import MethodTable
from proxy.state import build_state


def explain(cfg: Config, args: argparse.Namespace) -> tuple[Decision, str]:
    """The decision and its text for the call `args` describes."""
    state = build_state(cfg, connect=False)
    route = _rest_route(args) if getattr(args, "rest", None) else None
    path = route.method_path if route else _method_path(state.methods, args.method)
    principal = Principal(
        spiffe_id=args.spiffe, dns=tuple(args.dns), cn=args.cn,
        has_certificate=bool(args.spiffe or args.dns or args.cn),
        subject=args.sub, issuer=args.iss, scopes=frozenset(args.scope),
        has_token=bool(args.sub or args.iss or args.scope),
    )
    method = state.methods.methods.get(path)
    facts = admission.NO_FACTS
    if method is not None and method.addresses_model:
        facts = Facts(targets=(_target(method, args, route),))
    if method is not None and method.family == "cluster":
        facts = _cluster_facts(args)
    elif getattr(args, "op", None) or getattr(args, "address", None):
        raise ConfigError("--op", "--op and --address describe distributed-TF methods only")
    decision = admission.decide(state, principal, path, facts)
    text = _render(decision, path, principal, facts)
    shadow = admission.decide_shadow(state, principal, path, facts)
    if shadow is not None:
        text += "\n" + _render_shadow(shadow, differs=shadow.allowed != decision.allowed)
    return decision, text


def _target(method: Method, args: argparse.Namespace,
            route: rest_paths.Route | None) -> ModelTarget:
    signature = (args.signature or DEFAULT_SIGNATURE) if method.access is Access.DATA else None
    if route is not None:
        return dataclasses.replace(route.target, signature=signature)
    if not args.model:
        raise ConfigError("--model", f"{method.name} addresses a model: give --model")
    return ModelTarget(args.model, args.version, args.label, signature)


def _rest_route(args: argparse.Namespace) -> rest_paths.Route:
    """`--rest 'VERB PATH'`: the route the REST front would take; its path names the
    model, so --model, --version and --label would say it twice."""
    if args.model or args.version is not None or args.label:
        raise ConfigError("--rest", "the REST path names the model and version: leave out "
                          "--model, --version and --label")
    verb, _, target = args.rest.strip().partition(" ")
    try:
        return rest_paths.route(verb, target.strip())
    except Reject as refused:
        raise ConfigError("--rest", f"the REST front refuses {args.rest!r}: "
                          f"{refused.message}") from None


def _cluster_facts(args: argparse.Namespace) -> Facts:
    ops = tuple(OpUse(op, "--op") for op in dict.fromkeys(getattr(args, "op", None) or ()))
    addresses = tuple(Address(a, "?", 0, "--address")
                      for a in getattr(args, "address", None) or ())
    return Facts(cluster=ClusterFacts(ops=ops, addresses=addresses))


def _method_path(methods: MethodTable, pattern: str) -> str:
    """A method name, full path or glob naming exactly one known method; a path tfgate
    does not know is explained as the data path would answer it."""
    if pattern.startswith("/") and pattern not in methods.methods:
        return pattern
    try:
        paths = methods.resolve(pattern)
    except ValueError as exc:
        if pattern.startswith("/"):
            return pattern
        raise ConfigError("--method", str(exc)) from None
    if len(paths) != 1:
        raise ConfigError("--method", f"{pattern!r} matches {len(paths)} methods; name one")
    (path,) = paths
    return path


def _render_shadow(shadow: Decision, *, differs: bool) -> str:
    verdict = "ALLOW" if shadow.allowed else "DENY"
    why = f"rule: {shadow.rule}" if shadow.allowed else f"{shadow.reason.value}: {shadow.message}"
    return f"  shadow: {verdict} ({why}){' (differs)' if differs else ''}"


def _render(decision: Decision, path: str, principal: Principal, facts: Facts) -> str:
    verdict = "ALLOW" if decision.allowed else "DENY"
    lines = [f"{verdict} {path}", f"  principal: {principal.display()}"]
    if facts.targets:
        t = facts.targets[0]
        lines.append(f"  model: {t.name} version: {t.version_text()} signature: {t.signature}")
    if facts.cluster is not None and facts.cluster.ops:
        lines.append("  ops: " + " ".join(u.op for u in facts.cluster.ops))
    if facts.cluster is not None and facts.cluster.addresses:
        lines.append("  addresses: " + " ".join(a.address for a in facts.cluster.addresses))
    lines.append(f"  reason: {decision.reason.value}")
    lines.append(f"  rule: {decision.rule}" if decision.allowed else f"  why: {decision.message}")
    return "\n".join(lines)
