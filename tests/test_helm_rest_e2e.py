"""The chart's sidecar REST config, served: the tfgate config `helm template` writes for
`rest.enabled` in sidecar mode, with the pod's files and socket moved to this machine, takes
REST calls over mTLS and forwards them as gRPC over a unix socket to a ModelServer stand-in
(the TensorFlow-backed test backend) that has no TCP port at all."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests import resthelp as rh
from tests.test_helm import _with, check, render, tfgate_config

pytestmark = pytest.mark.tf

SOCKET = "unix:/run/modelserver/grpc.sock"  # where the chart's pod shares ModelServer's socket
PREDICT = "/tensorflow.serving.PredictionService/Predict"
TEAM_A_REST = {"name": "team-a", "principals": {"spiffe": ["spiffe://tfgate.test/team-a/*"]},
               "methods": ["Predict", "GetModelMetadata"], "models": ["half_plus_two"]}


def on_this_machine(doc: dict[str, Any], files: dict[str, str], socket: str) -> dict[str, Any]:
    """The rendered config with /etc/tfgate/ files taken from `files`, ModelServer's socket at
    `socket`, and each listener on a free loopback port (the pod's ports may be taken here);
    every other key as rendered."""
    def moved(value: str) -> str:
        if value.startswith(check.MOUNT):
            return files[value.removeprefix(check.MOUNT)]
        return socket if value == SOCKET else value

    out = check.replaced(doc, moved)
    for section in ("listen", "rest", "admin"):
        assert out[section]["address"].startswith("0.0.0.0:")
        out[section]["address"] = "127.0.0.1:0"
    out["audit"] = {"output": "stderr"}
    return out


@pytest.fixture(scope="module")
def socket_dir() -> Iterator[str]:
    where = tempfile.mkdtemp(prefix="tfgate-sock-")  # short: unix socket paths are bounded
    yield where
    shutil.rmtree(where, ignore_errors=True)


@pytest.fixture(scope="module")
def modelserver(socket_dir) -> Iterator[Any]:
    from tfgate_dev.testbackend import start_backend

    backend = start_backend(listen=f"unix:{socket_dir}/grpc.sock", record=True)
    yield backend
    backend.stop()


def test_rendered_sidecar_rest_config_translates_onto_the_socket(pki, modelserver) -> None:
    doc = tfgate_config(render(_with({"rest": {"enabled": True}},
                                     {"config": {"policy": {"rules": [TEAM_A_REST]}}})))
    assert doc["upstreams"]["modelserver"]["address"] == SOCKET
    files = {"tls/tls.crt": str(pki.server.cert_path), "tls/tls.key": str(pki.server.key_path),
             "client-ca/ca.crt": str(pki.ca.ca.cert_path)}
    cfg = on_this_machine(doc, files, modelserver.address)
    modelserver.clear_records()
    with rh.running_service(cfg) as service:
        port = rh.rest_port(service)
        with rh.client(pki, port) as alice:
            allowed = alice.post(rh.PREDICT_PATH, json={"instances": [1.0, 2.0, 3.0]})
        with rh.client(pki, port, who="bob") as bob:
            refused = bob.post(rh.PREDICT_PATH, json={"instances": [1.0]})
        with rh.client(pki, port, who=None) as stranger, pytest.raises(httpx.TransportError):
            stranger.post(rh.PREDICT_PATH, json={"instances": [1.0]})  # mTLS, as rendered
    assert allowed.status_code == 200, allowed.text
    assert allowed.json() == {"predictions": [3.5, 4.0, 4.5]}  # latest version: x/2 + 3
    assert refused.status_code == 403
    predicts = [r for r in modelserver.records() if r["method"] == PREDICT]
    assert len(predicts) == 1  # alice's call, as gRPC on the socket; bob's never arrived
