"""The Helm chart renders, passes lint, produces valid Kubernetes objects (strict schema),
and embeds a tfgate config that tfgate itself accepts."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from proxy.config import validate_config
from tfgate_dev.devpki import DevPKI, SigningKey, write_jwks

helm_python = pytest.importorskip("helm_python")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

CHART = pathlib.Path(__file__).resolve().parents[1] / "helm" / "tfgate"
RULES = {"rules": [{"name": "team-a", "principals": {"spiffe": ["spiffe://example.org/team-a/*"]},
                    "methods": ["Predict"], "models": ["half_plus_two"]}]}


def render(values: dict) -> list[dict]:
    with helm_python.Chart.load(CHART) as chart:
        rendered = chart.render(values=values, name="demo", namespace="ml")
    return [doc for text in rendered.values() for doc in yaml.safe_load_all(text) if doc]


def embedded_config(objects: list[dict], root: pathlib.Path) -> dict:
    """The ConfigMap's tfgate.yaml, with the pod's mount paths moved under `root`."""
    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap"]
    text = config_map["data"]["tfgate.yaml"].replace("/etc/tfgate/", f"{root}/")
    return yaml.safe_load(text)


class TestChart:
    def test_lint_has_no_errors(self):
        """`helm lint` finds no errors."""
        assert helm_python.lint(str(CHART))["errors"] == []

    def test_objects_are_valid_kubernetes(self):
        """Every rendered object validates strictly against the Kubernetes schema."""
        objects = render({"tfgate": {"policy": RULES}})
        assert {o["kind"] for o in objects} == {"ConfigMap", "Deployment", "Service",
                                                 "NetworkPolicy"}
        for obj in objects:
            kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)

    def test_only_tfgate_port_is_exposed(self):
        """The Service and NetworkPolicy expose tfgate's port only; ModelServer is on a socket."""
        objects = render({"tfgate": {"policy": RULES, "port": 9443}})
        service = next(o for o in objects if o["kind"] == "Service")
        assert [p["port"] for p in service["spec"]["ports"]] == [9443]
        policy = next(o for o in objects if o["kind"] == "NetworkPolicy")
        assert [p["port"] for p in policy["spec"]["ingress"][0]["ports"]] == [9443]
        pod = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]
        modelserver = next(c for c in pod["containers"] if c["name"] == "modelserver")
        assert "--grpc_socket_path=/run/modelserver/grpc.sock" in modelserver["args"]
        assert "ports" not in modelserver
        assert pod["securityContext"]["runAsNonRoot"] is True

    def test_embedded_config_is_accepted_by_tfgate(self, tmp_path):
        """The config the chart writes validates with tfgate's own loader, JWT included."""
        pki = DevPKI.create(tmp_path / "pki")
        server = pki.server()
        (tmp_path / "tls").mkdir()
        (tmp_path / "tls" / "tls.crt").write_bytes(server.cert_pem)
        (tmp_path / "tls" / "tls.key").write_bytes(server.key_pem)
        (tmp_path / "tls" / "ca.crt").write_bytes(pki.ca.cert_pem)
        (tmp_path / "jwks").mkdir()
        write_jwks(tmp_path / "jwks" / "jwks.json", [SigningKey.generate("k")])
        authn = {"jwt": {"issuers": [{"issuer": "https://idp", "audiences": ["tfgate"],
                                      "algorithms": ["ES256"],
                                      "jwks_file": "/etc/tfgate/jwks/jwks.json"}]}}
        objects = render({"tfgate": {"policy": RULES, "authn": authn, "jwksSecret": "jwks"}})
        config = validate_config(embedded_config(objects, tmp_path))
        assert config.upstreams["modelserver"].address == "unix:/run/modelserver/grpc.sock"
        assert config.policy.rules[0].name == "team-a"


class TestValuesSchema:
    def test_committed_schema_is_current(self):
        """values.schema.json is regenerated from proxy/config.py (`python helm/schema.py`)."""
        import importlib.util

        spec = importlib.util.spec_from_file_location("helm_schema", CHART.parent / "schema.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert (CHART / "values.schema.json").read_text() == module.render(), (
            "helm/tfgate/values.schema.json is stale: run python helm/schema.py")

    def test_schema_rejects_a_bad_rule(self):
        """A rule with an unknown key fails at render time, before anything is deployed."""
        bad = {"rules": [{"principals": {"spiffe": ["x"]}, "methods": ["Predict"],
                          "models": ["m"], "modles": ["typo"]}]}
        with pytest.raises(helm_python.HelmError):
            render({"tfgate": {"policy": bad}})
