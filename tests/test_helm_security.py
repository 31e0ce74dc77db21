"""Security properties of every rendered object, over the whole values matrix of
test_helm.py: the model server is reachable only through tfgate (no TCP port in sidecar
mode, no Service port, a NetworkPolicy fencing its pods), and every container runs
non-root, read-only, unprivileged, with no capabilities."""

from __future__ import annotations

import pytest

from tests.test_helm import (
    MATRIX,
    _with,
    all_containers,
    container,
    of_kind,
    one,
    pod_specs,
    render,
    tfgate_config,
)

# The ports a model server listens on when left to itself: ModelServer's gRPC and REST
# defaults (docs/kubernetes.md) and the TF task port of the cluster cases.
MODEL_SERVER_PORTS = {8500, 8501, 2222, 2300}


@pytest.fixture(scope="module", params=list(MATRIX))
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(MATRIX[request.param])


def rest_port(values: dict) -> int | None:
    """tfgate's REST port when the case enables the REST front."""
    rest = values.get("rest", {})
    return rest.get("port", 8444) if rest.get("enabled") else None


def effective(pod: dict, item: dict, key: str):
    """A securityContext key as the kubelet applies it: the container's, else the pod's."""
    return item.get("securityContext", {}).get(key, pod.get("securityContext", {}).get(key))


class TestContainers:
    def test_every_container_is_locked_down(self, rendered):
        case, objects = rendered
        pods = pod_specs(objects)
        assert pods, case
        for pod in pods:
            assert pod["automountServiceAccountToken"] is False
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
            for item in all_containers(pod):
                where = f"{case}/{item['name']}"
                context = item["securityContext"]
                assert effective(pod, item, "runAsNonRoot") is True, where
                assert effective(pod, item, "runAsUser") not in (None, 0), where
                assert context["readOnlyRootFilesystem"] is True, where
                assert context["allowPrivilegeEscalation"] is False, where
                assert context.get("privileged", False) is False, where
                assert context["capabilities"] == {"drop": ["ALL"]}, where

    def test_no_host_paths(self, rendered):
        case, objects = rendered
        for pod in pod_specs(objects):
            assert not [v for v in pod["volumes"] if "hostPath" in v], case


class TestModelServerIsolation:
    def test_sidecar_modelserver_has_no_tcp_port(self, rendered):
        """ModelServer is run as its binary (the image's entrypoint script adds
        --port=8500) with --port=0 and --rest_api_port=0, on the unix socket only, and
        declares no port. Only tfgate has ports, and only its own."""
        case, objects = rendered
        if MATRIX[case].get("mode", "sidecar") != "sidecar":
            pytest.skip("sidecar mode only")
        (pod,) = pod_specs(objects)
        modelserver = container(pod, "modelserver")
        assert modelserver["command"] == ["/usr/bin/tensorflow_model_server"]
        ports = [a for a in modelserver["args"]
                 if a.lstrip("-").split("=")[0] in ("port", "rest_api_port")]
        assert ports == ["--port=0", "--rest_api_port=0"]
        assert "--grpc_socket_path=/run/modelserver/grpc.sock" in modelserver["args"]
        for item in all_containers(pod):
            declared = {p["name"] for p in item.get("ports", [])}
            assert declared <= ({"grpc", "rest", "admin"} if item["name"] == "tfgate"
                                else set()), (
                item["name"], declared)

    def test_no_service_exposes_a_model_server_port(self, rendered):
        """Every Service port leads to a tfgate port (gRPC, or admin for metrics)."""
        case, objects = rendered
        tfgate_ports = {p["name"]: p["containerPort"] for pod in pod_specs(objects)
                        for p in container(pod, "tfgate")["ports"]}
        for service in of_kind(objects, "Service"):
            for port in service["spec"]["ports"]:
                assert port["targetPort"] in tfgate_ports, (case, port)
                assert port["port"] == tfgate_ports[port["targetPort"]]
                assert port["port"] not in MODEL_SERVER_PORTS, (case, port)

    def test_a_network_policy_fences_the_model_server_pods(self, rendered):
        """Sidecar: the pod holding ModelServer admits tfgate's ports only. Standalone:
        the model server's pods admit only this release's tfgate. Cluster: the task pods
        admit nothing on the TF port."""
        case, objects = rendered
        values = MATRIX[case]
        mode = values.get("mode", "sidecar")
        policies = of_kind(objects, "NetworkPolicy")
        own = next(p for p in policies if p["metadata"]["name"] == "demo-tfgate")
        allowed = {port["port"] for rule in own["spec"]["ingress"] for port in rule["ports"]}
        assert allowed <= {values.get("port", 8443), rest_port(values), 9901}
        assert "Ingress" in own["spec"]["policyTypes"]
        if mode == "standalone":
            fences = [p for p in policies if p["metadata"]["name"] == "demo-tfgate-fence"]
            ms = values["standalone"]["modelServer"]
            if not ms.get("fence", True):
                assert fences == []
                return
            (fence,) = fences
            assert fence["metadata"]["namespace"] == ms.get("namespace", "ml")
            assert fence["spec"]["podSelector"] == {"matchLabels": ms["podSelector"]}
            (rule,) = fence["spec"]["ingress"]
            (peer,) = rule["from"]
            assert peer["podSelector"]["matchLabels"] == {
                "app.kubernetes.io/name": "tfgate", "app.kubernetes.io/instance": "demo"}
            assert peer["namespaceSelector"]["matchLabels"] == {
                "kubernetes.io/metadata.name": "ml"}
        if mode == "cluster":
            tf_port = values["cluster"].get("tfPort", 2222)
            assert tf_port not in allowed
            for sts in of_kind(objects, "StatefulSet"):
                labels = sts["spec"]["template"]["metadata"]["labels"]
                assert own["spec"]["podSelector"]["matchLabels"].items() <= labels.items()


class TestEgress:
    def egress(self, objects: list[dict]) -> list[dict]:
        own = next(p for p in of_kind(objects, "NetworkPolicy")
                   if p["metadata"]["name"] == "demo-tfgate")
        assert "Egress" in own["spec"]["policyTypes"]
        return own["spec"]["egress"]

    def test_sidecar_pod_has_no_egress_by_default(self):
        """tfgate reaches ModelServer over the unix socket; neither needs the network."""
        assert self.egress(render(MATRIX["sidecar"])) == []

    def test_sidecar_egress_is_what_modelserver_was_given(self):
        rules = self.egress(render(MATRIX["sidecar-model-config"]))
        assert [r["to"][0] for r in rules[1:]] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
        assert {p["port"] for p in rules[0]["ports"]} == {53}  # names for that bucket

    def test_standalone_egress_is_dns_and_the_model_server_pods(self):
        dns, upstream = self.egress(render(MATRIX["standalone"]))
        assert {p["port"] for p in dns["ports"]} == {53}
        assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
        assert upstream["ports"] == [{"protocol": "TCP", "port": 8500}]
        assert upstream["to"] == [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "serving"}},
            "podSelector": {"matchLabels": {"app": "modelserver"}}}]

    def test_cluster_egress_is_dns_and_the_other_tasks_tfgate(self):
        dns, peers = self.egress(render(MATRIX["cluster-roles"]))
        assert {p["port"] for p in dns["ports"]} == {53}
        assert peers["ports"] == [{"protocol": "TCP", "port": 9443}]
        assert peers["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "demo"

    def test_jwks_issuer_egress_comes_from_extra_egress(self):
        """tfgate reads JWKS from a file; an issuer to reach is an extraEgress rule."""
        issuer = {"to": [{"ipBlock": {"cidr": "203.0.113.10/32"}}],
                  "ports": [{"protocol": "TCP", "port": 443}]}
        rules = self.egress(render(_with(MATRIX["sidecar-jwt"], {
            "networkPolicy": {"extraEgress": [issuer]}})))
        assert rules[-1] == issuer
        assert self.egress(render(MATRIX["sidecar-jwt"])) == []

    def test_ingress_allowlist(self):
        objects = render(MATRIX["standalone-tls"])
        own = one([p for p in of_kind(objects, "NetworkPolicy")
                   if p["metadata"]["name"] == "demo-tfgate"], "NetworkPolicy")
        (rule,) = own["spec"]["ingress"]
        assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]
        metrics = render(MATRIX["sidecar-operated"])
        own = next(p for p in of_kind(metrics, "NetworkPolicy"))
        admin = [r for r in own["spec"]["ingress"] if r["ports"][0]["port"] == 9901]
        assert admin[0]["from"][0]["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": "monitoring"}


class TestRestFront:
    """The REST front's port is tfgate's own: declared, exposed and admitted only when
    `rest.enabled`, from the gRPC port's allowlist, and it never opens a model-server
    port that the mode keeps closed."""

    def test_rest_port_is_exposed_only_when_enabled(self, rendered):
        case, objects = rendered
        port = rest_port(MATRIX[case])
        expected = [{"name": "rest", "port": port, "targetPort": "rest", "protocol": "TCP",
                     "appProtocol": "https"}] if port else []
        for service in of_kind(objects, "Service"):
            rest = [p for p in service["spec"]["ports"] if p["name"] == "rest"]
            assert rest == (expected if service["metadata"]["name"] == "demo-tfgate"
                            else []), (case, service["metadata"]["name"])
        for pod in pod_specs(objects):
            declared = {p["name"]: p["containerPort"] for p in container(pod, "tfgate")["ports"]}
            assert declared.get("rest") == port, case
        doc = tfgate_config(objects)
        assert ("rest" in doc) == (port is not None), case
        if port:
            # On the pod's address, for the Service, hence TLS from the mounted Secret.
            assert doc["rest"]["address"] == f"0.0.0.0:{port}"
            assert "plaintext" not in doc["rest"]
            assert doc["rest"]["tls"]["cert"] == "/etc/tfgate/tls/tls.crt"

    def test_network_policy_admits_rest_as_it_admits_grpc(self, rendered):
        case, objects = rendered
        values = MATRIX[case]
        port = rest_port(values)
        own = next(p for p in of_kind(objects, "NetworkPolicy")
                   if p["metadata"]["name"] == "demo-tfgate")
        grpc_rule = next(r for r in own["spec"]["ingress"]
                         if {"protocol": "TCP", "port": values.get("port", 8443)} in r["ports"])
        admitted = [r for r in own["spec"]["ingress"] for p in r["ports"] if p["port"] == port]
        if port is None:
            assert all(p["port"] != 8444 for r in own["spec"]["ingress"] for p in r["ports"])
            return
        assert admitted == [grpc_rule], case  # one rule: the same peers as gRPC
        assert grpc_rule.get("from") == (values.get("networkPolicy", {}).get("ingressFrom")
                                         or None)

    def test_sidecar_rest_is_translated_over_the_unix_socket(self, rendered):
        """In sidecar mode REST calls become gRPC calls on ModelServer's unix socket: no
        REST address upstream, and ModelServer keeps --port=0 --rest_api_port=0 (above)."""
        case, objects = rendered
        values = MATRIX[case]
        if values.get("mode", "sidecar") != "sidecar" or rest_port(values) is None:
            pytest.skip("sidecar mode with REST only")
        doc = tfgate_config(objects)
        assert doc["rest"]["upstream"] == "translate"
        assert doc["upstreams"] == {"modelserver": {"address": "unix:/run/modelserver/grpc.sock"}}
        (pod,) = pod_specs(objects)
        assert "ports" not in container(pod, "modelserver")

    def test_model_server_rest_ports_open_only_for_native(self, rendered):
        """Standalone: tfgate may reach (and the fence admits it to) the model server's
        REST ports only when REST calls go there natively."""
        case, objects = rendered
        values = MATRIX[case]
        if values.get("mode") != "standalone":
            pytest.skip("standalone mode only")
        ms = values["standalone"]["modelServer"]
        ports = list(ms.get("ports", [8500]))
        if values.get("rest", {}).get("upstream") == "native":
            ports += [p for p in ms.get("restPorts", [8501]) if p not in ports]
        wanted = [{"protocol": "TCP", "port": p} for p in ports]
        policies = {p["metadata"]["name"]: p for p in of_kind(objects, "NetworkPolicy")}
        egress = policies["demo-tfgate"]["spec"]["egress"]
        assert [r for r in egress if r["ports"] == wanted], (case, egress)
        assert not [r for r in egress if r["ports"] != wanted
                    and any(p["port"] in (8500, 8501) for p in r["ports"])]
        if "demo-tfgate-fence" in policies:
            (rule,) = policies["demo-tfgate-fence"]["spec"]["ingress"]
            assert rule["ports"] == wanted
