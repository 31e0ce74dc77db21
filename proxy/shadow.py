"""Shadow policy: a second rule set, decided beside the enforced one and never enforced.

Like Envoy RBAC's shadow rules: it lets an operator try a new policy on live traffic.
At each point where admission authorizes (the method at the headers, then the facts of
each message), the shadow is decided over the same principal, method and facts. A call
the two decide differently (one allows, the other denies) keeps the first such
difference on its record (`Call.shadow`); when the call ends, the front logs one line
with both decisions and counts it (metrics.py), and its audit event carries a `shadow`
field. The shadow never changes what happens to the call: it cannot refuse, delay or
fail it. A call the enforced policy refused at the headers never had its body read, so
its shadow was decided on the method alone; calls refused before the policy ran
(authentication, routing) have no shadow decision.
"""

from __future__ import annotations

import logging
from typing import Any

from proxy import config
from proxy.call import Call, Facts, ShadowVerdict
from proxy.policy import Decision, Policy
from proxy.routing import MethodTable

log = logging.getLogger("tfgate.shadow")


class Shadow:
    """The compiled shadow rules of one config."""

    def __init__(self, cfg: config.Policy, table: MethodTable,
                 cluster: config.Cluster | None = None) -> None:
        self.policy = Policy(cfg, table, cluster, section="shadow_policy")

    def compare(self, call: Call, path: str, facts: Facts, enforced: Decision) -> None:
        """Record on `call` where the shadow disagrees with `enforced`; never raises."""
        if call.shadow is not None or call.principal is None:
            return
        try:
            shadow = self.policy.decide(call.principal, path, facts)
        except Exception:
            log.exception("shadow policy failed on %s", path)
            return
        if shadow.allowed != enforced.allowed:
            call.shadow = ShadowVerdict(enforced.allowed, shadow.allowed, shadow.reason,
                                        shadow.rule)


def _verdict(allowed: bool) -> str:
    return "allow" if allowed else "deny"


def log_difference(call: Call) -> None:
    """The one line a differing call leaves (besides its audit event)."""
    s = call.shadow
    if s is None:
        return
    enforced = f"{_verdict(s.enforced_allowed)} (rule {call.rule})" if s.enforced_allowed \
        else _verdict(False)
    shadow = f"allow (rule {s.rule})" if s.allowed else f"deny ({s.reason.value})"
    log.info("shadow policy differs on %s for %s: enforced %s, shadow %s", call.method,
             call.principal.display() if call.principal else "anonymous", enforced, shadow)


def audit_field(call: Call) -> dict[str, Any] | None:
    """The audit event's `shadow` field: only when the shadow decided differently."""
    s = call.shadow
    if s is None:
        return None
    return {"decision": _verdict(s.allowed), "reason": s.reason.value, "rule": s.rule}
