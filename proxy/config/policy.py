"""`policy:` the rules (authorize stage). Default deny: a call is forwarded only if some
rule grants its method and everything the request addresses."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field

from proxy.config.base import Section
from proxy.config.cluster import OpFilter


class Principals(Section):
    """Who a rule applies to. Every field given must match (AND); within a field any
    pattern may match (OR). Patterns are case-sensitive globs (docs/identity.md)."""

    spiffe: list[str] = Field(
        default_factory=list, description="SPIFFE ID globs; `*` is one path segment, `**` any "
        "depth; only a certificate's single, well-formed SPIFFE ID is matched.")
    dns: list[str] = Field(
        default_factory=list, description="DNS SAN globs; `*` is one label (`*.example.org` "
        "does not match `a.b.example.org`).")
    cn: list[str] = Field(default_factory=list, description="Certificate common name globs.")
    sub: list[str] = Field(default_factory=list, description="Token `sub` globs.")
    iss: list[str] = Field(default_factory=list, description="Token `iss` globs.")
    scopes: list[str] = Field(
        default_factory=list, description="Token scope/group values; any one suffices.")
    any_authenticated: bool = Field(
        False, description="Match every authenticated caller (must be said explicitly).")

    @pydantic.model_validator(mode="after")
    def _not_empty(self) -> Principals:
        given = [self.spiffe, self.dns, self.cn, self.sub, self.iss, self.scopes]
        if not any(given) and not self.any_authenticated:
            raise ValueError("name at least one of spiffe, dns, cn, sub, iss, scopes, "
                             "or set any_authenticated: true")
        if any(given) and self.any_authenticated:
            raise ValueError("any_authenticated: true cannot be combined with matchers")
        return self

    def needs_certificate(self) -> bool:
        return bool(self.spiffe or self.dns or self.cn)

    def needs_token(self) -> bool:
        return bool(self.sub or self.iss or self.scopes)


def _version_item(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("a version is a number, a label, 'latest' or '*'")
    if isinstance(value, int) and value < 0:
        raise ValueError("version numbers are >= 0")
    if isinstance(value, str) and not value:
        raise ValueError("empty version label")
    return value


Version = Annotated[Any, pydantic.AfterValidator(_version_item)]


class Rule(Section):
    """One grant: these principals may call these methods on these models."""

    name: str | None = Field(None, description="Shown in audit logs and `tfgate explain`.")
    principals: Principals = Field(description="Who the rule applies to.")
    require: list[Literal["certificate", "token"]] = Field(
        default_factory=list, description="Identity proofs the caller must present.")
    methods: list[str] = Field(
        min_length=1, description="Method names (`Predict`), full paths, or globs over full "
        "paths (`/tensorflow.serving.PredictionService/*`; `**` for all). Admin methods "
        "(HandleReloadConfigRequest) must be named, not globbed.")
    models: list[str] = Field(
        default_factory=list, description="Model name globs; required when a granted method "
        "addresses a model.")
    versions: list[Version] = Field(
        default_factory=lambda: ["*"], description="Version numbers, labels, `latest` "
        "(no version in the request) or `*` (any).")
    signatures: list[str] = Field(
        default_factory=lambda: ["*"], description="Signature names; an empty signature_name "
        "in a request means `serving_default`. `*` means any.")
    ops: OpFilter | None = Field(
        None, description="Distributed TF: the ops this rule lets its principals run "
        "(omitted: every op the default denylist does not refuse).")
    settings: list[Literal["clear_existing_contexts", "tf2xla_dump_dir"]] = Field(
        default_factory=list, description="Distributed TF: request fields with server-wide "
        "effect this rule permits (CreateContext's clear_existing_contexts drops every "
        "other tenant's context; tf2xla_dump_dir writes files on the server).")

    def needs_token(self) -> bool:
        return "token" in self.require or self.principals.needs_token()


class Policy(Section):
    """Default deny: a call is forwarded only if some rule grants it."""

    rules: list[Rule] = Field(default_factory=list, description="Grants, checked in order.")
