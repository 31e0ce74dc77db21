"""JWKS from a URL, against a local HTTPS issuer (tests/issuer.py) that rotates keys:
a new kid passes after one refetch, a flood of unknown kids costs at most one fetch per
cooldown, an issuer that is down leaves the cached keys working until the stale bound;
size cap, no redirects, keys checked as in a file, OIDC discovery, and the real proxy."""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from proxy import config, metrics
from proxy.authn.jwt import TokenVerifier
from proxy.authn.remote_jwks import RemoteKeySet
from proxy.config import validate_config
from proxy.errors import ConfigError, Reason, Reject
from proxy.loop import LoopThread
from proxy.state import Shared, build_state
from tests.issuer import Issuer
from tests.obs_helpers import PREDICT, plaintext_config, predict, scrape, served, value
from tfgate_dev.devpki import SigningKey, mint_claims

AUDIENCE = "tfgate"


@pytest.fixture(scope="module")
def k1() -> SigningKey:
    return SigningKey.generate("k1", "ES256")


@pytest.fixture(scope="module")
def k2() -> SigningKey:
    return SigningKey.generate("k2", "ES256")


@pytest.fixture
def issuer(pki, k1) -> Iterator[Issuer]:
    made = Issuer(pki.server)
    made.keys = [k1]
    yield made
    made.stop()


def _issuer_entry(issuer: Issuer, pki, *, discovery: bool = False, **fetch: Any) -> dict:
    entry: dict[str, Any] = {"issuer": issuer.url, "audiences": [AUDIENCE],
                             "algorithms": ["ES256"],
                             "fetch": {"ca": str(pki.ca.ca.cert_path), **fetch}}
    if discovery:
        entry["discovery"] = True
    else:
        entry["jwks_url"] = issuer.url + "/jwks"
    return entry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _verifier(entry: dict, clock: Callable[[], float] | None = None
              ) -> tuple[TokenVerifier, RemoteKeySet]:
    jwt = config.JWT.model_validate({"issuers": [entry]})
    keys = RemoteKeySet(jwt.issuers[0], **({"clock": clock} if clock else {}))
    keys.start()
    assert keys.wait_first(10)
    return TokenVerifier(jwt, remote={entry["issuer"]: keys}), keys


@pytest.fixture
def stopped() -> Iterator[list[RemoteKeySet]]:
    made: list[RemoteKeySet] = []
    yield made
    for keys in made:
        keys.close()


def _token(issuer: Issuer, key: SigningKey, subject: str = "job") -> str:
    return key.token(mint_claims(issuer=issuer.url, audience=AUDIENCE, subject=subject))


def _refused(verifier: TokenVerifier, token: str) -> Reason:
    with pytest.raises(Reject) as err:
        verifier.verify(token)
    return err.value.reason


def _until(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _fetch(keys: RemoteKeySet) -> bool:
    return LoopThread.shared().run(keys.fetch_once(), timeout=30)


def _fetches(issuer_url: str, result: str) -> float:
    return metrics.REGISTRY.get_sample_value(
        "tfgate_jwks_fetches_total", {"issuer": issuer_url, "result": result}) or 0.0


class TestRotation:
    def test_keys_from_the_url_verify_tokens(self, issuer, pki, k1, stopped) -> None:
        verifier, keys = _verifier(_issuer_entry(issuer, pki))
        stopped.append(keys)
        assert verifier.verify(_token(issuer, k1)).subject == "job"
        assert issuer.hits["jwks"] == 1
        assert _fetches(issuer.url, "ok") == 1

    def test_new_kid_after_one_refetch_and_a_flood_costs_one_fetch(
            self, issuer, pki, k1, k2, stopped) -> None:
        verifier, keys = _verifier(_issuer_entry(issuer, pki, unknown_kid_cooldown_s=3600))
        stopped.append(keys)
        issuer.keys = [k1, k2]  # the issuer rotates: k2 is published
        invented = [SigningKey.generate(f"invented-{i}") for i in range(3)]
        flood = [_token(issuer, invented[i % 3], subject=f"s{i}") for i in range(60)]
        new = _token(issuer, k2)
        assert {_refused(verifier, t) for t in flood} == {Reason.TOKEN_UNKNOWN_KEY}
        assert _refused(verifier, new) is Reason.TOKEN_UNKNOWN_KEY  # refused now ...
        _until(lambda: keys.fetches == 2, "the refetch")
        _until(lambda: any(k.kid == "k2" for k in keys.keys), "k2 in the key set")
        assert verifier.verify(new).subject == "job"  # ... and accepted after the refetch
        assert {_refused(verifier, t) for t in flood} == {Reason.TOKEN_UNKNOWN_KEY}
        time.sleep(0.5)  # room for any fetch the second flood would wrongly start
        assert issuer.hits["jwks"] == 2 and keys.fetches == 2

    def test_a_removed_key_stops_verifying_even_cached_tokens(self, issuer, pki, k1, k2,
                                                              stopped) -> None:
        verifier, keys = _verifier(_issuer_entry(issuer, pki))
        stopped.append(keys)
        old = _token(issuer, k1)
        assert verifier.verify(old).subject == "job"  # now cached
        issuer.keys = [k2]
        assert _fetch(keys)
        assert _refused(verifier, old) is Reason.TOKEN_UNKNOWN_KEY


class TestIssuerDown:
    def test_cached_keys_work_until_the_stale_bound(self, issuer, pki, k1, stopped) -> None:
        clock = Clock()
        verifier, keys = _verifier(_issuer_entry(issuer, pki, max_age_s=10, max_stale_s=100),
                                   clock)
        stopped.append(keys)
        cached = _token(issuer, k1, subject="cached")
        assert verifier.verify(cached).subject == "cached"
        issuer.down = True
        errors = _fetches(issuer.url, "error")
        assert not _fetch(keys)
        assert _fetches(issuer.url, "error") == errors + 1
        clock.now += 100  # past max_age_s, within max_age_s + max_stale_s
        assert verifier.verify(cached).subject == "cached"
        assert verifier.verify(_token(issuer, k1, subject="fresh")).subject == "fresh"
        clock.now += 20   # past the stale bound: fail closed, cached tokens too
        assert _refused(verifier, cached) is Reason.TOKEN_UNKNOWN_KEY
        assert _refused(verifier, _token(issuer, k1, subject="late")) is Reason.TOKEN_UNKNOWN_KEY
        issuer.down = False
        assert _fetch(keys)
        assert verifier.verify(cached).subject == "cached"


class TestRefusedResponses:
    @pytest.mark.parametrize("breakage", ["too-big", "private-key", "redirect", "status",
                                          "not-json", "no-keys"])
    def test_a_bad_response_keeps_the_old_keys(self, issuer, pki, k1, stopped,
                                               breakage: str) -> None:
        verifier, keys = _verifier(_issuer_entry(issuer, pki, max_bytes=4096))
        stopped.append(keys)
        if breakage == "too-big":
            issuer.body = json.dumps({"keys": [k1.public_jwk()] * 40}).encode()
            assert len(issuer.body) > 4096
        elif breakage == "private-key":
            issuer.body = json.dumps({"keys": [{**k1.public_jwk(), "d": "AAAA"}]}).encode()
        elif breakage == "redirect":
            issuer.redirect = issuer.url + "/.well-known/openid-configuration"
        elif breakage == "status":
            issuer.status = 500
        elif breakage == "not-json":
            issuer.body = b"<html>"
        else:
            issuer.body = b'{"keys": []}'
        assert not _fetch(keys)
        assert verifier.verify(_token(issuer, k1)).subject == "job"

    def test_an_untrusted_certificate_is_refused(self, issuer, pki, stopped) -> None:
        entry = _issuer_entry(issuer, pki)
        del entry["fetch"]["ca"]  # the system's trust store does not know the test CA
        _, keys = _verifier(entry)
        stopped.append(keys)
        assert keys.keys == ()
        assert issuer.hits["jwks"] == 0


class TestDiscovery:
    def test_jwks_uri_from_the_discovery_document(self, issuer, pki, k1, stopped) -> None:
        verifier, keys = _verifier(_issuer_entry(issuer, pki, discovery=True))
        stopped.append(keys)
        assert verifier.verify(_token(issuer, k1)).subject == "job"
        assert (issuer.hits["discovery"], issuer.hits["jwks"]) == (1, 1)

    def test_a_document_naming_another_issuer_is_refused(self, issuer, pki, stopped) -> None:
        issuer.named_issuer = "https://elsewhere.example"
        _, keys = _verifier(_issuer_entry(issuer, pki, discovery=True))
        stopped.append(keys)
        assert keys.keys == () and issuer.hits["jwks"] == 0


class TestConfig:
    def _validate(self, **entry: Any) -> config.JWT:
        base = {"issuer": "https://issuer.example", "audiences": ["a"], "algorithms": ["ES256"]}
        return config.JWT.model_validate({"issuers": [{**base, **entry}]})

    @pytest.mark.parametrize("url", ["http://issuer.example/jwks", "ftp://127.0.0.1/jwks",
                                     "https://user:pw@issuer.example/jwks", "/jwks"])
    def test_refused_urls(self, url: str) -> None:
        with pytest.raises(ValueError):
            self._validate(jwks_url=url)

    @pytest.mark.parametrize("url", ["https://issuer.example/jwks", "http://127.0.0.1:8080/k",
                                     "http://[::1]/k", "http://localhost/k"])
    def test_accepted_urls(self, url: str) -> None:
        assert self._validate(jwks_url=url).issuers[0].remote()

    def test_discovery_needs_an_https_issuer(self) -> None:
        with pytest.raises(ValueError, match="discovery"):
            self._validate(issuer="corp-issuer", discovery=True)

    def test_one_key_source(self) -> None:
        with pytest.raises(ValueError, match="exactly one"):
            self._validate(jwks_url="https://issuer.example/jwks", discovery=True)


def _proxy_config(issuer: Issuer, pki, upstream: str, tmp_path: pathlib.Path) -> dict:
    """The plaintext test config, its one issuer's keys at the local issuer's URL."""
    config_ = plaintext_config(None, upstream, tmp_path)
    config_["authn"]["jwt"]["issuers"] = [_issuer_entry(issuer, pki)]
    config_["policy"]["rules"][0]["principals"] = {"iss": [issuer.url]}
    config_["policy"]["rules"][0]["require"] = ["token"]
    return config_


class TestServed:
    def test_the_proxy_verifies_with_fetched_keys(self, issuer, pki, k1, raw_backend,
                                                  tmp_path) -> None:
        with served(_proxy_config(issuer, pki, raw_backend.address, tmp_path)) as service:
            token = _token(issuer, k1)  # start waited for the first fetch
            with grpc.insecure_channel(service.address) as channel:
                answer = channel.unary_unary(PREDICT)(
                    predict("half_plus_two"), metadata=(("authorization", f"Bearer {token}"),),
                    timeout=10)
            scraped = scrape(service)
        assert answer.startswith(b"echo:")
        assert value(scraped, "tfgate_jwks_fetches_total", issuer=issuer.url, result="ok") >= 1

    def test_states_of_one_process_share_a_key_set(self, issuer, pki, tmp_path) -> None:
        """A reload keeps the keys it has (and their schedule) instead of starting empty."""
        cfg = validate_config(_proxy_config(issuer, pki, "127.0.0.1:1", tmp_path))
        shared = Shared()
        first = build_state(cfg, shared)
        second = build_state(cfg, shared)
        try:
            assert first.remote_keys[0] is second.remote_keys[0]
        finally:
            first.close()
            second.close()
        assert shared.key_sets._sets == {}


def test_config_error_names_the_issuer_key() -> None:
    with pytest.raises(ConfigError) as err:
        validate_config({
            "listen": {"address": "127.0.0.1:0", "plaintext": True},
            "upstreams": {"m": {"address": "127.0.0.1:1"}},
            "authn": {"jwt": {"issuers": [{"issuer": "i", "audiences": ["a"],
                                           "algorithms": ["ES256"],
                                           "jwks_url": "http://10.0.0.1/jwks"}]}}})
    assert err.value.path == "authn.jwt.issuers[0].jwks_url"


def test_an_unusable_ca_is_a_config_error_and_leaks_no_key_set(issuer, pki, tmp_path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    config_ = _proxy_config(issuer, pki, "127.0.0.1:1", tmp_path)
    good = _issuer_entry(issuer, pki)
    bad = {**_issuer_entry(issuer, pki), "issuer": "https://second.example",
           "fetch": {"ca": str(not_pem)}}
    config_["authn"]["jwt"]["issuers"] = [good, bad]
    shared = Shared()
    with pytest.raises(ConfigError) as err:
        build_state(validate_config(config_), shared)
    assert "https://second.example" in err.value.problem
    assert shared.key_sets._sets == {}
