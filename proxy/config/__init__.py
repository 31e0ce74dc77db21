"""The configuration: one YAML document, declared once as a frozen pydantic tree.

One module per stage declares its section (`listen`, `authn`, `policy`, `limits`,
`upstreams`, `process`, `admin`); this module holds the root `Config`, the checks that span
sections, and loading. Every key is declared with its type, default and meaning in
exactly one place; docs/config.md and the Helm values schema are generated from it.
Relative file paths are taken relative to the config file. `load_config` raises
`ConfigError` whose path reads like `policy.rules[2].models[0]` (`ConfigErrors` when
there are several: every one is reported, not the first); it never exits the process
(only `cli.py` does). A key given twice is an error (`strict_yaml.py`). What is valid
but probably not meant is `lint.py`'s: warnings, not errors.
"""

from __future__ import annotations

import pathlib
from typing import Any

import pydantic
import yaml
from pydantic import Field

from proxy.config.admin import Admin
from proxy.config.authn import ASYMMETRIC_ALGORITHMS, JWT, Authn, Issuer, JWKSFetch
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
from proxy.config.logs import Logging
from proxy.config.policy import Policy, Principals, Rule, Version
from proxy.config.process import Audit, Server
from proxy.config.rest import Rest, RestJson, RestParse
from proxy.config.strict_yaml import DuplicateKeys, StrictLoader
from proxy.config.upstreams import Identity, ModelRoute, Upstream, UpstreamTLS
from proxy.errors import ConfigError, ConfigErrors, config_errors

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "JWT",
    "Address",
    "Admin",
    "Audit",
    "Authn",
    "Cluster",
    "ClusterTensors",
    "Config",
    "ConfigError",
    "ConfigErrors",
    "FilePath",
    "Handles",
    "Identity",
    "Issuer",
    "JWKSFetch",
    "KeyProblem",
    "Limits",
    "Listen",
    "ListenTLS",
    "Logging",
    "MiB",
    "ModelRoute",
    "OpFilter",
    "Policy",
    "Principals",
    "Rest",
    "RestJson",
    "RestParse",
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
    shadow_policy: Policy | None = Field(
        None, description="A second rule set, decided beside `policy` on every call and never "
        "enforced: calls it would decide differently are logged, counted and marked in the "
        "audit event (docs/operations.md, Shadow policy).")
    audit: Audit = Field(default_factory=Audit, description="Audit log.")
    server: Server = Field(default_factory=Server, description="Process model.")
    limits: Limits = Field(default_factory=Limits, description="Input sizes, rates, "
                           "concurrency and deadlines (docs/limits.md).")
    admin: Admin = Field(default_factory=Admin, description="Health and metrics listener.")
    logging: Logging = Field(default_factory=Logging, description="Operational log "
                             "(docs/operations.md).")
    rest: Rest | None = Field(None, description="The REST front (ModelServer's HTTP/JSON "
                              "API); omit to serve gRPC only.")
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
        self._rest_upstreams()
        # The shadow rules meet the same checks, so a shadow can be promoted as it is.
        self._check_rules("policy", self.policy)
        if self.shadow_policy is not None:
            self._check_rules("shadow_policy", self.shadow_policy)
        return self

    def _check_rules(self, section: str, policy: Policy) -> None:
        # A rule without a token proof needs some listener that takes certificates.
        certless = not self.listen.requires_certificates() and (
            self.rest is None or not self.rest.requires_certificates())
        for i, rule in enumerate(policy.rules):
            if rule.needs_token():
                if self.authn.jwt is None:
                    raise KeyProblem((section, "rules", i),
                                     "needs tokens but authn.jwt is not set")
            elif certless:
                raise KeyProblem((section, "rules", i, "require"),
                                 "must include token: the listener does not require client "
                                 "certificates")

    def token_required(self) -> bool:
        """Whether every call must present a token: said as `authn.jwt.required`, or
        implied because every rule requires one (so the authenticate stage refuses a
        certificate-only call as UNAUTHENTICATED instead of policy as PERMISSION_DENIED)."""
        jwt = self.authn.jwt
        rules = self.policy.rules
        return jwt is not None and (jwt.required or (
            bool(rules) and all(rule.needs_token() for rule in rules)))

    def _rest_upstreams(self) -> None:
        if self.rest is None or self.rest.upstream != "native":
            return
        for name, upstream in self.upstreams.items():
            if upstream.kind == "serving" and upstream.rest_address is None:
                raise KeyProblem(("upstreams", name, "rest_address"),
                                 "required when rest.upstream is native")

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
    """Validate a parsed document; raise ConfigError naming the bad key, or ConfigErrors
    naming every bad key when there are several."""
    if not isinstance(data, dict):
        raise ConfigError("", "the configuration must be a YAML mapping")
    try:
        return Config.model_validate(data, context={"base_dir": base_dir})
    except pydantic.ValidationError as exc:
        raise config_errors([_config_error(e) for e in exc.errors(include_url=False)]
                            ) from None


def _config_error(err: Any) -> ConfigError:
    message = err["msg"].removeprefix("Value error, ")
    cause = err.get("ctx", {}).get("error")
    key = cause.key if isinstance(cause, KeyProblem) else ()
    return ConfigError(_format_loc((*err["loc"], *key)), message)


def load_config(path: pathlib.Path) -> Config:
    """Read, parse and validate a YAML config file. A key given twice in one mapping is
    an error (strict_yaml.py): YAML would otherwise keep the last one silently."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError("", f"cannot read config {path}: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except DuplicateKeys as exc:
        raise config_errors([ConfigError(_format_loc(d.path), f"duplicate key on line "
                                         f"{d.line} (first given on line {d.first_line}); "
                                         "YAML would keep only the last")
                             for d in exc.duplicates]) from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{path}: not valid YAML: {exc}") from None
    return validate_config(data, base_dir=path.parent.resolve())
