"""tfgate's own listener under the attacks of tests/h2attack.py: a front that checks
credentials at HEADERS time never waits for, or buffers, the body of a caller it refuses.
(Against the old sync front, whose unary handlers waited for the body on a worker
thread, both tests failed.)"""

from __future__ import annotations

import copy
import time

import grpc
import h2attack as attack
from conftest import AUDIENCE, ISSUER, base_config

from bench.messages import predict_request
from tfgate_dev.devpki import mint_claims

THREADS = 4  # the old front's thread count; the attack opens four times as many streams


def jwt_only_config(pki, signing) -> dict:
    """TLS without client certificates: the token is the only credential, so anyone who
    can reach the port can open streams before authenticating."""
    config = copy.deepcopy(base_config(pki, signing, upstream="127.0.0.1:9"))
    config["listen"]["tls"] = {"cert": str(pki.server.cert_path), "key": str(pki.server.key_path),
                               "client_auth": "none"}
    config["policy"]["rules"] = [rule for rule in config["policy"]["rules"]
                                 if "token" in rule.get("require", ())]
    return config


def refused_call(pki, address: str, token: str) -> grpc.StatusCode:
    """A token caller asks for a model no rule grants it: tfgate answers PERMISSION_DENIED
    itself, without any upstream, as long as it gets to run the call."""
    with pki.channel(address) as channel:
        try:
            channel.unary_unary(attack.PREDICT)(
                predict_request(), timeout=2.0,
                metadata=(("authorization", f"Bearer {token}"),))
        except grpc.RpcError as err:
            return err.code()
    return grpc.StatusCode.OK


def test_half_open_streams_without_credentials_do_not_starve_honest_calls(
        pki, signing, make_proxy):
    proxy = make_proxy(jwt_only_config(pki, signing))
    token = signing.key.token(mint_claims(issuer=ISSUER, audience=AUDIENCE, subject="svc",
                                          scope="predict"))
    assert refused_call(pki, proxy.address, token) is grpc.StatusCode.PERMISSION_DENIED
    target = attack.Target("127.0.0.1", proxy.port, ca=pki.ca.ca.cert_pem,
                           server_name="localhost")
    with attack.half_open(target, 4 * THREADS, duration=20.0) as run:
        end = time.monotonic() + 10.0
        while run.stats["streams_opened"] < 4 * THREADS and time.monotonic() < end:
            time.sleep(0.05)
        assert run.stats["streams_opened"] == 4 * THREADS
        assert refused_call(pki, proxy.address, token) is grpc.StatusCode.PERMISSION_DENIED


def test_partial_large_messages_without_credentials_are_not_buffered(pki, signing, make_proxy):
    proxy = make_proxy(jwt_only_config(pki, signing))
    target = attack.Target("127.0.0.1", proxy.port, ca=pki.ca.ca.cert_pem,
                           server_name="localhost")
    declared = proxy.config.listen.max_message_bytes - 16
    with attack.partial_message(target, 8, declared=declared, duration=20.0) as run:
        end = time.monotonic() + 3.0
        while (time.monotonic() < end
               and run.open_count() + run.stats["streams_ended_by_server"] < 8):
            time.sleep(0.05)
        time.sleep(1.0)  # let the windows fill, whatever the front allows
    # The old front took each stream's whole declared message; this one refuses them
    # at HEADERS time, after at most one small window each.
    assert run.stats["streams_opened"] == 8
    assert run.stats["body_bytes_sent"] <= 1 << 20
