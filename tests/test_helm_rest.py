"""The chart's REST front (`rest.enabled`): the `rest` section it writes, which clients it
asks for certificates, where REST calls go in each mode, and what it refuses. The
properties over the whole values matrix (ports exposed only when enabled, the
NetworkPolicy, ModelServer's isolation) are in test_helm_security.py; the config checker
and strict validation run on the REST cases of the matrix in test_helm.py."""

from __future__ import annotations

import pytest

from tests.test_helm import (
    MATRIX,
    STANDALONE,
    TEAM_A,
    _with,
    container,
    documented_values,
    helm_python,
    pod_specs,
    render,
    render_files,
    rules,
    tfgate_config,
)

SIDECAR_REST = MATRIX["sidecar-rest"]
NATIVE = MATRIX["standalone-rest-native"]


def client_ca_mounted(objects: list[dict]) -> bool:
    (pod,) = pod_specs(objects)
    mounts = {m["name"] for m in container(pod, "tfgate")["volumeMounts"]}
    volumes = {v["name"] for v in pod["volumes"]}
    assert ("client-ca" in mounts) == ("client-ca" in volumes)
    return "client-ca" in mounts


class TestRestConfig:
    def test_the_chart_writes_address_tls_and_upstream(self):
        """The listener binds the pod's address (the Service reaches it there) with TLS
        from the mounted Secret; mTLS by default, as the gRPC listener."""
        rest = tfgate_config(render(SIDECAR_REST))["rest"]
        assert rest == {"address": "0.0.0.0:8444", "upstream": "translate", "tls": {
            "cert": "/etc/tfgate/tls/tls.crt", "key": "/etc/tfgate/tls/tls.key",
            "client_ca": "/etc/tfgate/client-ca/ca.crt", "client_auth": "require"}}

    def test_config_rest_keys_pass_through(self):
        rest = tfgate_config(render(MATRIX["sidecar-rest-tokens"]))["rest"]
        assert rest["address"] == "0.0.0.0:9444"
        assert rest["max_body_bytes"] == 4194304 and rest["parse"] == {"threads": 1}
        assert rest["tls"] == {"cert": "/etc/tfgate/tls/tls.crt",
                               "key": "/etc/tfgate/tls/tls.key", "client_auth": "none"}

    def test_client_auth_follows_the_grpc_listener_unless_given(self):
        """A token-only release (no client CA) stays token-only on REST; REST may ask for
        certificates the gRPC listener does not, and then the client CA is mounted."""
        token_only = render(_with(MATRIX["sidecar-token-only"], {"rest": {"enabled": True}}))
        assert tfgate_config(token_only)["rest"]["tls"]["client_auth"] == "none"
        assert "client_ca" not in tfgate_config(token_only)["rest"]["tls"]
        assert not client_ca_mounted(token_only)
        rest_mtls = render(MATRIX["sidecar-token-only-rest-mtls"])
        doc = tfgate_config(rest_mtls)
        assert "client_ca" not in doc["listen"]["tls"]
        assert doc["rest"]["tls"]["client_ca"] == "/etc/tfgate/client-ca/ca.crt"
        assert client_ca_mounted(rest_mtls)

    def test_disabled_writes_no_rest_section(self):
        objects = render(MATRIX["sidecar"])
        assert "rest" not in tfgate_config(objects)
        assert not [p for pod in pod_specs(objects)
                    for p in container(pod, "tfgate")["ports"] if p["name"] == "rest"]


class TestUpstreams:
    def test_standalone_native_forwards_to_the_rest_service(self):
        doc = tfgate_config(render(NATIVE))
        assert doc["rest"]["upstream"] == "native"
        assert doc["upstreams"]["modelserver"]["rest_address"] == (
            "https://modelserver.serving.svc:8501")
        assert doc["upstreams"]["modelserver"]["tls"]["server_name"] == "modelserver"

    def test_standalone_translate_needs_no_rest_address(self):
        upstream = tfgate_config(render(MATRIX["standalone-rest"]))["upstreams"]["modelserver"]
        assert upstream == {"address": "modelserver.serving.svc:8500"}

    def test_rest_ports_given_once(self):
        """restPorts already among ports are not repeated in the NetworkPolicies."""
        objects = render(_with(NATIVE, {"standalone": {"modelServer": {
            "ports": [8500, 8501], "restPorts": [8501, 8601]}}}))
        fence = next(o for o in objects if o["metadata"]["name"] == "demo-tfgate-fence")
        assert [p["port"] for p in fence["spec"]["ingress"][0]["ports"]] == [8500, 8501, 8601]
        defaults = render(_with(NATIVE, {"standalone": {"modelServer": {"ports": [8500, 8501]}}}))
        fence = next(o for o in defaults if o["metadata"]["name"] == "demo-tfgate-fence")
        assert [p["port"] for p in fence["spec"]["ingress"][0]["ports"]] == [8500, 8501]


class TestRefusals:
    @pytest.mark.parametrize(("values", "message"), [
        ({"rest": {"enabled": True, "upstream": "native"}},
         "rest.upstream: native is refused in sidecar mode"),
        (_with(STANDALONE, {"rest": {"enabled": True, "upstream": "native"}}),
         "standalone.upstream.restAddress: required when rest.upstream is native"),
        ({"mode": "cluster", "rest": {"enabled": True},
          "cluster": {"container": {"image": {"repository": "trainer"}}}},
         "cluster mode has no ModelServer"),
        ({"config": {"rest": {"max_calls": 8}}}, "config.rest is set but rest.enabled is false"),
        ({"rest": {"enabled": True, "port": 8443}}, "rest.port must differ from port"),
        ({"rest": {"enabled": True, "port": 9901}}, "rest.port must differ from admin.port"),
    ])
    def test_chart_refuses(self, values, message):
        with pytest.raises(helm_python.HelmRenderError) as refused:
            render(_with(rules(TEAM_A), values))
        assert message in str(refused.value)

    def test_sidecar_native_opens_no_modelserver_port(self):
        """The refusal is the whole answer: there is no values combination that renders a
        sidecar ModelServer with a REST (or any TCP) port."""
        with pytest.raises(helm_python.HelmRenderError):
            render(_with(SIDECAR_REST, {"rest": {"upstream": "native"}, "sidecar": {
                "modelServer": {"extraArgs": ["--rest_api_port=8501"]}}}))

    @pytest.mark.parametrize(("values", "message"), [
        ({"config": {"rest": {"address": "0.0.0.0:1"}}},
         "additional properties 'address' not allowed"),
        ({"config": {"rest": {"plaintext": True}}},
         "additional properties 'plaintext' not allowed"),
        ({"config": {"rest": {"upstream": "native"}}},
         "additional properties 'upstream' not allowed"),
        ({"config": {"rest": {"tls": {"cert": "/x"}}}},
         "additional properties 'cert' not allowed"),
        ({"rest": {"upstream": "grpc"}}, "at '/rest/upstream'"),
        ({"rest": {"enabled": True, "prot": 1}},
         "at '/rest': additional properties 'prot' not allowed"),
    ])
    def test_schema_refuses_the_keys_the_chart_owns(self, values, message):
        with pytest.raises(helm_python.HelmValuesError) as refused:
            render(values)
        assert message in str(refused.value)


class TestNotes:
    def test_notes_name_the_rest_url_and_where_it_goes(self):
        notes = render_files(SIDECAR_REST)["tfgate/templates/NOTES.txt"]
        assert "https://demo-tfgate.ml.svc:8444/v1/models/<model>:predict" in notes
        assert "translated to gRPC" in notes
        notes = render_files(NATIVE)["tfgate/templates/NOTES.txt"]
        assert "forwarded as JSON to https://modelserver.serving.svc:8501" in notes
        assert "8444" not in render_files(MATRIX["sidecar"])["tfgate/templates/NOTES.txt"]


class TestDocumentedInstalls:
    def test_rest_installs_are_documented(self):
        """docs/kubernetes.md has a copy-paste install with REST in sidecar and standalone
        mode, and README.md one; test_helm.py renders, validates and checks each."""
        documented = documented_values()
        with_rest = {(name.split(":")[0], values.get("mode", "sidecar"))
                     for name, values in documented.items()
                     if values.get("rest", {}).get("enabled")}
        assert {("docs/kubernetes.md", "sidecar"),
                ("docs/kubernetes.md", "standalone")} <= with_rest
        assert any(doc == "README.md" for doc, _mode in with_rest)
