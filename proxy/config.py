"""The configuration: one YAML document, declared once here as a frozen pydantic tree.

Every key is declared with its type, default and meaning in exactly one place; the
README's reference is written from these declarations. Relative file paths are taken
relative to the config file. `load_config` raises `ConfigError` whose path reads like
`policy.rules[2].models[0]`; it never exits the process (only `cli.py` does).
"""

from __future__ import annotations

import ipaddress
import pathlib
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo

from proxy.config_limits import Limits
from proxy.errors import ConfigError

MiB = 1024 * 1024
# Algorithms a token may be signed with. HMAC and `none` are absent on purpose: keys
# are public (asymmetric), so an HMAC token "signed" with a public key must never pass.
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                         "ES256", "ES384", "ES512", "EdDSA")


def _resolve_file(value: pathlib.Path, info: ValidationInfo) -> pathlib.Path:
    base = (info.context or {}).get("base_dir")
    path = value if value.is_absolute() or base is None else pathlib.Path(base) / value
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    return path


FilePath = Annotated[pathlib.Path, pydantic.AfterValidator(_resolve_file)]


class KeyProblem(ValueError):
    """Raised by a validator that checks several keys, to name the one at fault:
    `key` is its path below the validated section, e.g. ("routes", 1, "upstream")."""

    def __init__(self, key: tuple[int | str, ...], problem: str) -> None:
        super().__init__(problem)
        self.key = key


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def parse_address(address: str) -> tuple[str, str | None, int | None]:
    """Split `host:port`, `[v6]:port` or `unix:/path` into (kind, host, port)."""
    if address.startswith("unix:"):
        if len(address) <= len("unix:"):
            raise ValueError("unix socket address needs a path, e.g. unix:/run/tfgate.sock")
        return "unix", None, None
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port or unix:PATH, got {address!r}")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError(f"put an IPv6 host in brackets, e.g. [::1]:8443, got {address!r}")
    return "tcp", host.strip("[]"), int(port)


def is_loopback(address: str) -> bool:
    kind, host, _ = parse_address(address)
    if kind == "unix":
        return True
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_address(value: str) -> str:
    parse_address(value)
    return value


Address = Annotated[str, pydantic.AfterValidator(_check_address)]


class ListenTLS(Section):
    """TLS on the client-facing listener."""

    cert: FilePath = Field(description="Server certificate chain (PEM).")
    key: FilePath = Field(description="Server private key (PEM).")
    client_ca: FilePath | None = Field(
        None, description="CA bundle (PEM) that client certificates must chain to.")
    # No "optional": gRPC Python can only require a client certificate or not ask for
    # one, so an optional mode would silently never see certificates.
    client_auth: Literal["require", "none"] = Field(
        "require",
        description="`require`: mTLS, the default. `none`: TLS without client "
        "certificates, allowed only when every rule requires a token.")

    @pydantic.model_validator(mode="after")
    def _ca_needed(self) -> ListenTLS:
        if self.client_auth == "require" and self.client_ca is None:
            raise KeyProblem(("client_ca",),
                             f"required when client_auth is {self.client_auth!r}")
        return self


class Listen(Section):
    """Where tfgate accepts calls."""

    address: Address = Field("127.0.0.1:8443", description="host:port or unix:PATH.")
    tls: ListenTLS | None = Field(None, description="TLS settings; required unless plaintext.")
    plaintext: bool = Field(
        False, description="Serve without TLS. Only allowed on loopback or a unix socket.")
    max_message_bytes: int = Field(
        64 * MiB, gt=0, le=2**31 - 1,
        description="Largest request message accepted, checked by gRPC before any stage "
        "runs, on the decompressed size for gzip/deflate messages (grpcio stops inflating "
        "at the cap); larger ones fail with RESOURCE_EXHAUSTED and are not audited.")

    @pydantic.model_validator(mode="after")
    def _tls_or_loopback(self) -> Listen:
        if self.plaintext and self.tls is not None:
            raise ValueError("set either tls or plaintext: true, not both")
        if self.tls is None and not self.plaintext:
            raise ValueError("tls is required (plaintext: true is allowed only on loopback "
                             "or a unix socket)")
        if self.plaintext and not is_loopback(self.address):
            raise KeyProblem(("plaintext",), f"plaintext listener refused on non-loopback "
                             f"address {self.address!r}; use tls, 127.0.0.1, ::1 or unix:PATH")
        return self


class UpstreamTLS(Section):
    """TLS from tfgate to an upstream."""

    ca: FilePath = Field(description="CA bundle (PEM) to verify the upstream's certificate.")
    cert: FilePath | None = Field(None, description="Client certificate (PEM) tfgate presents.")
    key: FilePath | None = Field(None, description="Key (PEM) for `cert`.")
    server_name: str | None = Field(
        None, description="Name to verify in the upstream certificate (default: the host).")

    @pydantic.model_validator(mode="after")
    def _pair(self) -> UpstreamTLS:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key must be given together")
        return self


class Upstream(Section):
    """A ModelServer (or compatible) that tfgate forwards to."""

    address: Address = Field(description="host:port or unix:PATH of the upstream.")
    tls: UpstreamTLS | None = Field(
        None, description="TLS to the upstream; omit for plaintext on an isolated network.")
    max_message_bytes: int = Field(
        256 * MiB, gt=0, le=2**31 - 1, description="Largest response accepted from upstream.")


class ModelRoute(Section):
    """Send calls for matching model names to a named upstream."""

    models: list[str] = Field(min_length=1, description="Model name globs (`*`, `?`, `[..]`).")
    upstream: str = Field(description="Name of an entry in `upstreams`.")


class Issuer(Section):
    """A token issuer tfgate trusts, with the keys and algorithms it may use."""

    issuer: str = Field(min_length=1, description="Exact `iss` claim value.")
    audiences: list[str] = Field(min_length=1, description="Accepted `aud` values (any one).")
    algorithms: list[str] = Field(
        min_length=1, description=f"Allowed `alg` values, from {', '.join(ASYMMETRIC_ALGORITHMS)}.")
    jwks_file: FilePath | None = Field(None, description="JWKS file with the public keys.")
    public_keys: list[FilePath] = Field(
        default_factory=list, description="PEM public keys or certificates (alternative to jwks_file).")
    required_claims: list[str] = Field(
        default_factory=list, description="Claims that must be present besides iss, aud and exp.")

    @pydantic.field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        for alg in value:
            if alg not in ASYMMETRIC_ALGORITHMS:
                raise ValueError(f"algorithm {alg!r} not allowed; use one of "
                                 f"{', '.join(ASYMMETRIC_ALGORITHMS)} (never none or HMAC)")
        return value

    @pydantic.model_validator(mode="after")
    def _one_key_source(self) -> Issuer:
        if (self.jwks_file is None) == (not self.public_keys):
            raise ValueError("give exactly one of jwks_file or public_keys")
        return self


class JWT(Section):
    """Bearer tokens in the `authorization` metadata."""

    issuers: list[Issuer] = Field(min_length=1, description="Trusted issuers.")
    leeway_s: float = Field(30, ge=0, le=600, description="Clock skew allowed on exp/nbf/iat.")
    scope_claim: str = Field(
        "scope", description="Claim holding scopes or groups: a space-separated string or a list.")
    cache_size: int = Field(10000, ge=0, description="Verified tokens kept (until they expire).")
    max_token_bytes: int = Field(8192, gt=0, description="Longer tokens are refused unread.")

    @pydantic.model_validator(mode="after")
    def _distinct_issuers(self) -> JWT:
        seen: set[str] = set()
        for i, issuer in enumerate(self.issuers):
            if issuer.issuer in seen:
                raise KeyProblem(("issuers", i, "issuer"), f"{issuer.issuer!r} is listed twice; "
                                 "give one entry with all of its keys")
            seen.add(issuer.issuer)
        return self


class Authn(Section):
    """How callers prove who they are. Certificates come from the TLS listener."""

    jwt: JWT | None = Field(None, description="Token verification; omit to use certificates only.")


class Principals(Section):
    """Who a rule applies to. Every field given must match (AND); within a field any
    pattern may match (OR). Patterns are case-sensitive globs."""

    spiffe: list[str] = Field(default_factory=list, description="SPIFFE ID (URI SAN) globs.")
    dns: list[str] = Field(default_factory=list, description="Certificate DNS SAN globs.")
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
        "paths. Admin methods (HandleReloadConfigRequest) must be named, not globbed.")
    models: list[str] = Field(
        default_factory=list, description="Model name globs; required when a granted method "
        "addresses a model.")
    versions: list[Version] = Field(
        default_factory=lambda: ["*"], description="Version numbers, labels, `latest` "
        "(no version in the request) or `*` (any).")
    signatures: list[str] = Field(
        default_factory=lambda: ["*"], description="Signature names; an empty signature_name "
        "in a request means `serving_default`. `*` means any.")


class Policy(Section):
    """Default deny: a call is forwarded only if some rule grants it."""

    rules: list[Rule] = Field(default_factory=list, description="Grants, checked in order.")


class Identity(Section):
    """Passing the verified caller to the upstream."""

    forward_metadata_key: str | None = Field(
        None, description="Metadata key that carries the verified principal upstream; "
        "any copy the client sent is dropped first.")
    strip_metadata: list[str] = Field(
        default_factory=list, description="Extra client metadata keys never forwarded.")

    @pydantic.field_validator("forward_metadata_key")
    @classmethod
    def _lowercase(cls, value: str | None) -> str | None:
        if value is not None and (value != value.lower() or value.startswith((":", "grpc-"))):
            raise ValueError("use a lowercase key that does not start with ':' or 'grpc-'")
        return value


class Audit(Section):
    """One JSON event per call."""

    output: str = Field("stderr", description="`stdout`, `stderr`, or a file path to append to.")

    @pydantic.field_validator("output")
    @classmethod
    def _beside_config(cls, value: str, info: ValidationInfo) -> str:
        base = (info.context or {}).get("base_dir")
        if value in ("stdout", "stderr") or base is None:
            return value
        return str(pathlib.Path(base) / value)


class Server(Section):
    """Process model."""

    threads: int = Field(64, ge=1, le=4096, description="Calls handled at once per process; "
                         "size it to peak in-flight calls (rps x model latency).")
    grace_s: float = Field(5.0, ge=0, description="Drain time on SIGTERM before cancelling calls.")


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
        tls = self.listen.tls
        certless = self.listen.plaintext or (tls is not None and tls.client_auth != "require")
        for i, rule in enumerate(self.policy.rules):
            if "token" in rule.require or rule.principals.needs_token():
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
