"""Hostile clients against a real `tfgate serve` process, beside an honest client.

Each attack class of docs/hostile-networks.md runs for a few seconds from raw HTTP/2
(tests/h2attack.py) against tfgate in its own process, in both listener modes (TLS with
bearer tokens only, and mTLS), with and without credentials. While it runs, an honest
caller makes calls: every one must succeed. Afterwards the proxy process's thread count
and RSS must have stayed within bounds that do not grow with the attack, and bodies of
callers tfgate refused must not have been taken in.
"""

from __future__ import annotations

import copy
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
import h2attack as attack
import psutil
import pytest
import yaml
from conftest import AUDIENCE, ISSUER, base_config

from tests.rawbackend import PREDICT
from tests.test_e2e_forwarding import predict_bytes
from tfgate_dev.devpki import mint_claims

pytestmark = pytest.mark.slow

ATTACK_S = 3.0
MAX_THREADS = 48            # the event loop, grpc's own pollers and executors: no per-call thread
MAX_RSS_GROWTH_MB = 150     # whatever the attack: bounded by listen.* bounds, not by the attacker
REQUEST = predict_bytes("half_plus_two", 1)


@dataclass
class Proxy:
    address: str
    port: int
    process: psutil.Process
    popen: subprocess.Popen
    mode: str
    samples: list[tuple[int, int]] = field(default_factory=list)  # (threads, rss)

    def sample(self) -> None:
        with self.process.oneshot():
            self.samples.append((self.process.num_threads(), self.process.memory_info().rss))


def _config(pki, signing, upstream: str, mode: str, audit: pathlib.Path) -> dict:
    config = copy.deepcopy(base_config(pki, signing, upstream))
    config["audit"]["output"] = str(audit)
    config["limits"] = {"concurrency": {"per_principal": 16}}
    config["listen"]["receive_timeout_s"] = 2
    if mode == "token":
        config["listen"]["tls"] = {"cert": str(pki.server.cert_path),
                                   "key": str(pki.server.key_path), "client_auth": "none"}
        config["policy"]["rules"] = [r for r in config["policy"]["rules"]
                                     if "token" in r.get("require", ())]
    return config


@pytest.fixture
def serve(pki, signing, raw_backend, tmp_path: pathlib.Path) -> Iterator[Callable[[str], Proxy]]:
    started: list[subprocess.Popen] = []

    def start(mode: str) -> Proxy:
        config_path = tmp_path / f"{mode}.yaml"
        config_path.write_text(yaml.safe_dump(
            _config(pki, signing, raw_backend.address, mode, tmp_path / f"{mode}-audit.log")))
        ready = tmp_path / f"{mode}.ready"
        popen = subprocess.Popen([sys.executable, "-m", "proxy.cli", "serve", "--config",
                                  str(config_path), "--workers", "1", "--ready-file", str(ready)],
                                 stderr=subprocess.DEVNULL)
        started.append(popen)
        deadline = time.monotonic() + 60
        while not ready.exists() or not ready.read_text().strip():
            assert popen.poll() is None, "tfgate exited at start"
            assert time.monotonic() < deadline, "tfgate did not start"
            time.sleep(0.05)
        address = ready.read_text().strip()
        return Proxy(address, int(address.rsplit(":", 1)[1]), psutil.Process(popen.pid),
                     popen, mode)

    yield start
    for popen in started:
        popen.terminate()
        try:
            popen.wait(10)
        except subprocess.TimeoutExpired:
            popen.kill()


def _token(signing, subject: str = "svc") -> str:
    return signing.key.token(mint_claims(issuer=ISSUER, audience=AUDIENCE, subject=subject,
                                         scope="predict"))


class Honest:
    """Calls Predict in a loop from its own channel while an attack runs."""

    def __init__(self, pki, signing, proxy: Proxy) -> None:
        if proxy.mode == "token":
            self.channel = pki.channel(proxy.address)
            self.metadata = (("authorization", f"Bearer {_token(signing, 'honest')}"),)
        else:
            self.channel = pki.channel(proxy.address, pki.alice)
            self.metadata = ()
        self.codes: list[grpc.StatusCode] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._proxy = proxy

    def _loop(self) -> None:
        call = self.channel.unary_unary(PREDICT)
        while not self._stop.is_set():
            try:
                call(REQUEST, timeout=5, metadata=self.metadata)
                self.codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as err:
                self.codes.append(err.code())
            self._proxy.sample()
            time.sleep(0.02)

    def __enter__(self) -> Honest:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)
        self.channel.close()


def _target(pki, proxy: Proxy, holder) -> attack.Target:
    cert = key = None
    if holder is not None:
        cert, key = str(holder.cert_path), str(holder.key_path)
    return attack.Target("127.0.0.1", proxy.port, ca=pki.ca.ca.cert_pem, cert=cert, key=key,
                         server_name="localhost")


# (name, attack factory(target, authorization)); each runs for ATTACK_S.
ATTACKS: dict[str, Callable[..., attack.Running]] = {
    "half-open": lambda t, auth: attack.half_open(t, 256, authorization=auth,
                                                  reopen_per_s=200, duration=ATTACK_S),
    "slow-body": lambda t, auth: attack.slow_body(t, 128, message_size=4096, chunk=1,
                                                  interval=0.2, authorization=auth,
                                                  reopen_per_s=200, duration=ATTACK_S),
    "partial-large": lambda t, auth: attack.partial_message(t, 32, declared=(64 << 20) - 64,
                                                            authorization=auth,
                                                            duration=ATTACK_S),
    "rapid-reset": lambda t, auth: attack.rapid_reset(t, connections=3, rate=1500,
                                                      authorization=auth, with_body=None,
                                                      duration=ATTACK_S),
    "connections": lambda t, auth: attack.connection_flood(t, 400, rate=400, duration=ATTACK_S),
}

# The attacker in each mode: `None` credentials means none at all (token mode only: an
# mTLS listener never lets a caller without a certificate past the handshake).
CASES = [
    ("token", "no-credentials"), ("token", "valid-token"),
    ("mtls", "ungranted-certificate"), ("mtls", "granted-certificate"),
]


def _attacker(pki, signing, who: str):
    """(certificate holder or None, authorization header value or None)."""
    if who == "valid-token":
        return None, f"Bearer {_token(signing, 'attacker')}"
    if who == "ungranted-certificate":
        return pki.dns_client, None
    if who == "granted-certificate":
        return pki.bob, None     # granted Predict on other_model only
    return None, None


@pytest.mark.parametrize("attack_name", list(ATTACKS))
@pytest.mark.parametrize(("mode", "who"), CASES)
def test_honest_calls_succeed_under_attack(pki, signing, serve, mode, who, attack_name):
    """Every honest call succeeds while the attack runs, and the proxy's threads and
    memory stay within bounds that do not depend on the attack."""
    proxy = serve(mode)
    holder, authorization = _attacker(pki, signing, who)
    with Honest(pki, signing, proxy) as warmup:
        time.sleep(0.5)
    baseline_rss = max(rss for _, rss in proxy.samples)
    assert warmup.codes and set(warmup.codes) == {grpc.StatusCode.OK}
    with Honest(pki, signing, proxy) as honest, \
            ATTACKS[attack_name](_target(pki, proxy, holder), authorization) as run:
        time.sleep(ATTACK_S)
    stats = run.stats.snapshot()
    assert len(honest.codes) >= 5, (honest.codes, stats)
    assert set(honest.codes) == {grpc.StatusCode.OK}, (honest.codes, stats)
    threads = max(t for t, _ in proxy.samples)
    growth_mb = (max(rss for _, rss in proxy.samples) - baseline_rss) / 2**20
    assert threads <= MAX_THREADS, (threads, stats)
    assert growth_mb <= MAX_RSS_GROWTH_MB, (growth_mb, stats)
    assert proxy.popen.poll() is None, "the proxy died"


@pytest.mark.parametrize(("mode", "who"), [c for c in CASES if c[1] != "granted-certificate"])
def test_refused_callers_bodies_are_not_taken_in(pki, signing, serve, mode, who):
    """A caller tfgate refuses from its headers never gets a read posted, so gRPC never
    opens its stream's window past the initial 64 KiB: partial 64 MiB messages put at
    most a window's worth per stream into the proxy."""
    proxy = serve(mode)
    holder, authorization = _attacker(pki, signing, who)
    if authorization is not None:  # a valid token for a model no rule grants
        authorization = f"Bearer {_token(signing, 'attacker')}"
    streams = 16
    with attack.partial_message(_target(pki, proxy, holder), streams,
                                declared=(64 << 20) - 64, path=PREDICT.replace(
                                    "Predict", "GetModelStatus") if authorization else PREDICT,
                                authorization=authorization, duration=ATTACK_S) as run:
        time.sleep(ATTACK_S)
    assert run.stats["streams_opened"] >= streams
    assert run.max_accepted() <= 128 * 1024, run.stats.snapshot()
