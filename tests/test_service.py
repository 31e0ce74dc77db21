"""`proxy.service.Service` in this process (real listener, real upstream, real files): what
a reload swaps and what it leaves, the hooks it offers monitoring (outcome counts and
listeners, certificate expiry), and the restart-only list checked against the gRPC options
the listener is really made with."""

from __future__ import annotations

import copy
import datetime
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from cryptography import x509

from proxy import bounds, config
from proxy.config import validate_config
from proxy.service import RESTART_ONLY, ReloadOutcome, Service, restart_only_changes
from tests.rawbackend import PREDICT, RawBackend
from tests.serveproc import Site, fresh_channel, predict, wait_until
from tests.test_e2e_forwarding import predict_bytes


@pytest.fixture
def backend() -> Iterator[RawBackend]:
    server = RawBackend()
    yield server
    server.stop()


@pytest.fixture
def site(tmp_path, backend) -> Site:
    return Site(tmp_path, backend.address)


@pytest.fixture
def start(site) -> Iterator[Any]:
    started: list[Service] = []

    def run(doc: dict[str, Any]) -> Service:
        site.write_config(doc)
        cfg = config.load_config(site.config_path)
        started.append(Service(cfg, config_path=site.config_path).start())
        return started[-1]

    yield run
    for service in started:
        service.stop(0)


def test_old_state_channels_close_once_drained(site, backend, start) -> None:
    """The State a call started under keeps its upstream channel open until that call
    ends, then closes it; the new State has its own."""
    service = start(site.config(watch=None))
    channel = fresh_channel(service.address, site.credentials())
    held = channel.unary_unary(PREDICT).future(predict_bytes("m"), timeout=30,
                                               metadata=[("x-block", "1")])
    assert backend.entered.wait(30)
    old = service.runtime.state
    site.write_config(site.config(["m", "n"], watch=None))
    assert service.reload() is True
    assert service.runtime.state is not old
    assert old.upstreams["backend"]._channel is not None  # its call is still in flight
    backend.release.set()
    assert held.result(30).startswith(b"echo:")
    wait_until(lambda: old.upstreams["backend"]._channel is None, "the old channel to close")
    assert predict(service.address, site.credentials(), "n").startswith(b"echo:")
    assert service.runtime.state.upstreams["backend"]._channel is not None
    channel.close()


def test_reload_outcomes_are_counted_and_reported(site, start) -> None:
    """`reloads` counts ok/refused; listeners get each outcome; a refusal names its key."""
    service = start(site.config(watch=None))
    seen: list[ReloadOutcome] = []
    service.reload_listeners.append(seen.append)
    bad = site.config(watch=None)
    bad["listen"]["tls"]["client_auth"] = "sometimes"
    site.write_config(bad)
    assert service.reload() is False
    site.write_config(site.config(["n"], watch=None))
    assert service.reload() is True
    assert service.reloads.snapshot() == {"refused": 1, "ok": 1}
    assert [o.ok for o in seen] == [False, True] and service.last_reload is seen[1]
    assert seen[0].key == "listen.tls.client_auth" and seen[0].config is None
    assert seen[1].config is not None and seen[1].config.policy.rules[0].models == ["n"]


def second_call_refused_while_one_is_held(service, site, backend, named: str) -> None:
    """A first call held at the backend; a second is RESOURCE_EXHAUSTED naming `named`."""
    channel = fresh_channel(service.address, site.credentials())
    held = channel.unary_unary(PREDICT).future(predict_bytes("m"), timeout=30,
                                               metadata=[("x-block", "1")])
    assert backend.entered.wait(30)
    with pytest.raises(grpc.RpcError) as err:
        predict(service.address, site.credentials())
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert named in (err.value.details() or "")
    backend.release.set()
    assert held.result(30).startswith(b"echo:")
    channel.close()


def test_listener_bounds_change_on_reload(site, backend, start) -> None:
    """listen.max_calls_per_peer is tfgate's own count, so a reload changes it: with 1,
    a second call from the same address is refused while the first is held."""
    service = start(site.config(watch=None))
    doc = site.config(watch=None)
    doc["listen"]["max_calls_per_peer"] = 1
    site.write_config(doc)
    assert service.reload() is True
    second_call_refused_while_one_is_held(service, site, backend, "listen.max_calls_per_peer")


def test_max_calls_is_tfgates_own_refusal(site, backend, start) -> None:
    """listen.max_calls is counted by tfgate (gRPC's maximum_concurrent_rpcs would queue
    calls instead): with 1, a second call is refused RESOURCE_EXHAUSTED, reason overloaded,
    while the first is held, as docs/config.md says."""
    doc = site.config(watch=None)
    doc["listen"]["max_calls"] = 1
    service = start(doc)
    second_call_refused_while_one_is_held(service, site, backend, "(listen.max_calls)")
    wait_until(lambda: service.runtime.in_flight() == 0, "the held call to end")
    assert service.runtime.state.shared.outcomes.snapshot().get("overloaded") == 1


def test_certificate_expiry_of_every_certificate_in_use(site, tmp_path, start) -> None:
    """Server chain, client CA and the upstream's CA and client certificate, each with
    its key, subject and seconds left; a rotation shows the new expiry."""
    proxy_client = site.ca.client("tfgate-proxy", file_stem="proxy-client")
    doc = site.config(watch=None)
    doc["upstreams"]["backend"]["tls"] = {"ca": str(site.ca.ca.cert_path),
                                          "cert": str(proxy_client.cert_path),
                                          "key": str(proxy_client.key_path)}
    service = start(doc)
    by_key = {c.key: c for c in service.certificates()}
    assert set(by_key) == {"listen.tls.cert", "listen.tls.client_ca", "upstreams.backend.tls.ca",
                           "upstreams.backend.tls.cert"}
    assert by_key["upstreams.backend.tls.cert"].subject.startswith("CN=tfgate-proxy")
    for cert in by_key.values():
        assert 29 * 86400 < cert.seconds_left() <= 30 * 86400
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=2)
    short = site.ca._issue("short", eku=x509.ExtendedKeyUsageOID.SERVER_AUTH,
                           sans=[x509.DNSName("localhost")], file_stem="issued-short",
                           not_after=soon)
    site.write_tls(short)
    assert service.reload() is True
    left = {c.key: c.seconds_left() for c in service.certificates()}
    assert 3600 < left["listen.tls.cert"] <= 7200


def test_files_lists_every_file_a_config_names(site) -> None:
    doc = site.config()
    doc["authn"] = {"jwt": {"issuers": [{"issuer": "i", "audiences": ["a"],
                                         "algorithms": ["ES256"],
                                         "public_keys": [str(site.ca.ca.cert_path)]}]}}
    doc["upstreams"]["backend"]["tls"] = {"ca": str(site.ca.ca.cert_path)}
    cfg = validate_config(doc)
    assert cfg.files() == [site.files / "server.pem", site.files / "server.key",
                           site.files / "ca.pem", site.ca.ca.cert_path]


# -- the restart-only list against what the listener is made with ----------------------

def _listen() -> dict[str, Any]:
    return {"address": "127.0.0.1:0", "plaintext": True}


def _variants(section: type[config.Section], path: str) -> Iterator[tuple[str, dict]]:
    """For each number of `section` (recursively), a change to it: (key, change)."""
    for name, field in section.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, config.Section):
            for key, sub in _variants(annotation, f"{path}.{name}"):
                yield key, {name: sub}
        elif name not in ("tls", "plaintext", "address", "local_identity"):  # not numbers
            default = 60.0 if field.default is None else field.default
            yield f"{path}.{name}", {name: default + 7}


def test_every_grpc_option_comes_from_a_restart_only_key() -> None:
    """Change each listen key in turn: any key that changes the gRPC server options (fixed
    when the server is made) must be in RESTART_ONLY; the others (tfgate's own bounds)
    must change on reload, and are not in it."""
    base = config.Listen.model_validate(_listen())
    options = bounds.grpc_options(base, reuse_port=False)
    for key, change in _variants(config.Listen, "listen"):
        merged = _deep_merge(_listen(), change)
        listen = config.Listen.model_validate(merged)
        if bounds.grpc_options(listen, reuse_port=False) != options:
            assert any(key == k or key.startswith(k + ".") for k in RESTART_ONLY), key
        else:
            assert key not in RESTART_ONLY, f"{key} changes no gRPC option: reloadable"


def _deep_merge(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in change.items():
        out[key] = _deep_merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def test_restart_only_changes_names_each_key(site) -> None:
    old = validate_config(site.config())
    doc = site.config(address="127.0.0.1:9")
    doc["listen"]["keepalive"] = {"time_s": 5}
    doc["limits"] = {"table_size": 128}
    doc["server"]["grace_s"] = 1  # reloadable: not named
    assert restart_only_changes(old, validate_config(doc)) == [
        "listen.address", "listen.keepalive", "limits.table_size"]
