"""The configuration: one YAML document, declared once as a frozen pydantic tree.

One module per stage declares its section (`listen`, `authn`, `policy`, `limits`,
`upstreams`, `process`); this module holds the root `Config`, the checks that span
sections, and loading. Every key is declared with its type, default and meaning in
exactly one place; docs/config.md and the Helm values schema are generated from it.
Relative file paths are taken relative to the config file. `load_config` raises
`ConfigError` whose path reads like `policy.rules[2].models[0]`; it never exits the
process (only `cli.py` does).
"""

from __future__ import annotations

import pathlib
from typing import Any

import pydantic
import yaml
from pydantic import Field

from proxy.config.authn import ASYMMETRIC_ALGORITHMS, JWT, Authn, Issuer
from proxy.config.base import (
    Address,
    FilePath,
    KeyProblem,
    MiB,
    Section,
    is_loopback,
    parse_address,
)
from proxy.config.cluster import Cluster, ClusterTensors, Handles, OpFilter
from proxy.config.limits import Limits
from proxy.config.listen import Listen, ListenTLS
from proxy.config.policy import Policy, Principals, Rule, Version
from proxy.config.process import Audit, Server
from proxy.config.upstreams import Identity, ModelRoute, Upstream, UpstreamTLS
from proxy.errors import ConfigError

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "JWT",
    "Address",
    "Audit",
    "Authn",
    "Cluster",
    "ClusterTensors",
    "Config",
    "ConfigError",
    "FilePath",
    "Handles",
    "Identity",
    "Issuer",
    "KeyProblem",
    "Limits",
    "Listen",
    "ListenTLS",
    "MiB",
    "ModelRoute",
    "OpFilter",
    "Policy",
    "Principals",
    "Rule",
    "Section",
    "Server",
    "Upstream",
    "UpstreamTLS",
    "Version",
    "is_loopback",
    "load_config",
    "parse_address",
    "validate_config",
]


class Config(Section):
    """The whole tfgate configuration."""

    listen: Listen = Field(description="Client-facing listener.")
    upstreams: dict[str, Upstream] = Field(min_length=1, description="Named upstreams.")
    default_upstream: str | None = Field(
        None, description="Upstream for calls no route matches (default: the only upstream).")
    routes: list[ModelRoute] = Field(default_factory=list, description="Model-name routing.")
    authn: Authn = Field(default_factory=Authn, description="Authentication.")
    identity: Identity = Field(default_factory=Identity, description="Identity forwarding.")
    policy: Policy = Field(default_factory=Policy, description="Authorization rules.")
    audit: Audit = Field(default_factory=Audit, description="Audit log.")
    server: Server = Field(default_factory=Server, description="Process model.")
    limits: Limits = Field(default_factory=Limits, description="Input sizes, rates, "
                           "concurrency and deadlines (docs/limits.md).")
    cluster: Cluster = Field(default_factory=Cluster, description="Distributed TensorFlow: "
                             "cluster addresses and handle ownership.")

    @pydantic.model_validator(mode="after")
    def _references(self) -> Config:
        names = set(self.upstreams)
        if self.default_upstream is not None and self.default_upstream not in names:
            raise KeyProblem(("default_upstream",),
                             f"{self.default_upstream!r} is not in upstreams")
        for i, route in enumerate(self.routes):
            if route.upstream not in names:
                raise KeyProblem(("routes", i, "upstream"),
                                 f"{route.upstream!r} is not in upstreams")
        certless = not self.listen.requires_certificates()
        for i, rule in enumerate(self.policy.rules):
            if rule.needs_token():
                if self.authn.jwt is None:
                    raise KeyProblem(("policy", "rules", i),
                                     "needs tokens but authn.jwt is not set")
            elif certless:
                raise KeyProblem(("policy", "rules", i, "require"),
                                 "must include token: the listener does not require client "
                                 "certificates")
        return self

    def upstream_for_default(self) -> str | None:
        if self.default_upstream is not None:
            return self.default_upstream
        return next(iter(self.upstreams)) if len(self.upstreams) == 1 else None


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validate_config(data: Any, base_dir: pathlib.Path | None = None) -> Config:
    """Validate a parsed document; raise ConfigError naming the first bad key."""
    if not isinstance(data, dict):
        raise ConfigError("", "the configuration must be a YAML mapping")
    try:
        return Config.model_validate(data, context={"base_dir": base_dir})
    except pydantic.ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        message = err["msg"].removeprefix("Value error, ")
        cause = err.get("ctx", {}).get("error")
        key = cause.key if isinstance(cause, KeyProblem) else ()
        raise ConfigError(_format_loc((*err["loc"], *key)), message) from None


def load_config(path: pathlib.Path) -> Config:
    """Read, parse and validate a YAML config file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError("", f"cannot read config {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{path}: not valid YAML: {exc}") from None
    return validate_config(data, base_dir=path.parent.resolve())
