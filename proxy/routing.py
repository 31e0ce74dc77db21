"""Route: which method a path names, and which upstream an admitted call goes to.

`MethodTable` is built from the families of the configured upstreams' kinds. Paths are
matched exactly and case-sensitively; a path not in the table is refused with
UNIMPLEMENTED without being forwarded, and the paths a family marks always-denied (and
the profiler, on every TF server) are refused with PERMISSION_DENIED whatever the policy
says (docs/wire-facts.md). `UpstreamRouter` sends a call to an upstream of its method's
family: by model name (first matching route), else the default upstream.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from proxy.call import Facts
from proxy.errors import ConfigError, Reason, Reject
from proxy.families import Access, Family, Method
from proxy.families.cluster import CLUSTER
from proxy.families.serving import SERVING
from proxy.globs import compile_globs

if TYPE_CHECKING:
    from proxy import config

FAMILIES: dict[str, Family] = {SERVING.name: SERVING, CLUSTER.name: CLUSTER}

# The profiler writes files and directories chosen by the caller on the server, and every
# TF server registers it (ModelServer by default): refused whatever family is enabled.
ALWAYS_DENIED = ("/tensorflow.ProfilerService/",)


def _service(prefix: str) -> str:
    """`/tensorflow.ProfilerService/` -> `ProfilerService`."""
    return prefix.strip("/").rsplit(".", 1)[-1]


class MethodTable:
    """The methods tfgate knows for one config, from the families it enables."""

    def __init__(self, families: Iterable[Family]) -> None:
        self.families = tuple(families)
        self.methods: dict[str, Method] = {
            m.path: m for f in self.families for m in f.methods}
        self.always_denied = ALWAYS_DENIED + tuple(
            p for f in self.families for p in f.always_denied)
        names = [m.name for m in self.methods.values()]
        # A bare name stands for a method only where it is unambiguous.
        self._by_name = {m.name: m.path for m in self.methods.values()
                         if names.count(m.name) == 1}

    @classmethod
    def for_config(cls, cfg: config.Config) -> MethodTable:
        kinds = dict.fromkeys(u.kind for u in cfg.upstreams.values())
        return cls(FAMILIES[kind] for kind in kinds)

    def lookup(self, path: str) -> Method:
        method = self.methods.get(path)
        if method is not None:
            return method
        if path.startswith(self.always_denied):
            raise Reject(Reason.METHOD_ALWAYS_DENIED,
                         f"method {path} is never allowed through tfgate")
        raise Reject(Reason.UNKNOWN_METHOD, f"unknown method {path}")

    def resolve(self, pattern: str) -> frozenset[str]:
        """Expand a rule's method entry to known paths; raise ValueError if it names none.

        `Predict` and `PredictionService/Predict` name one method; a pattern containing a
        glob character matches full paths but never admin methods (those must be named).
        """
        if pattern.startswith(self.always_denied) or any(
                _service(p) in pattern for p in self.always_denied):
            raise ValueError(f"{pattern!r} is always denied and cannot be granted")
        if pattern in self._by_name:
            return frozenset({self._by_name[pattern]})
        path = pattern if pattern.startswith("/") else None
        if path is None and "/" in pattern:
            path = next((p for p in self.methods if p.endswith("." + pattern)), None)
        if path in self.methods:
            return frozenset({path})
        if any(c in pattern for c in "*?["):
            glob = compile_globs([pattern])  # ValueError for a bad pattern: the caller's
            matched = frozenset(p for p, m in self.methods.items()
                                if m.access is not Access.ADMIN and glob.fullmatch(p))
            if matched:
                return matched
        hint = "; `*` stays within one /-segment, `**` crosses them" if "*" in pattern else ""
        raise ValueError(f"{pattern!r} matches no known method{hint}")


def _route_globs(patterns: list[str], index: int) -> re.Pattern[str]:
    try:
        return compile_globs(patterns)
    except ValueError as exc:
        raise ConfigError(f"routes[{index}].models", str(exc)) from None


class UpstreamRouter:
    """Chooses an upstream of the method's family: by model name (first matching route),
    else that family's default (`default_upstream` if it is of that kind, else the only
    upstream of that kind)."""

    def __init__(self, cfg: config.Config) -> None:
        kinds = {name: up.kind for name, up in cfg.upstreams.items()}
        self._routes = [(_route_globs(r.models, i), r.upstream, kinds[r.upstream])
                        for i, r in enumerate(cfg.routes)]
        self._defaults: dict[str, str] = {}
        for kind in dict.fromkeys(kinds.values()):
            names = [n for n, k in kinds.items() if k == kind]
            if cfg.default_upstream in names:
                self._defaults[kind] = names[names.index(cfg.default_upstream)]
            elif len(names) == 1:
                self._defaults[kind] = names[0]

    def upstream_for(self, method: Method, facts: Facts) -> str:
        model = facts.targets[0].name if facts.targets else None
        if model is not None:
            for pattern, name, kind in self._routes:
                if kind == method.family and pattern.fullmatch(model):
                    return name
        default = self._defaults.get(method.family)
        if default is None:
            raise Reject(Reason.NO_UPSTREAM,
                         f'no upstream serves model "{model}"' if model else
                         "no default upstream for this method")
        return default
