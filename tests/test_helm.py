"""The Helm chart: every mode renders, passes lint, produces valid Kubernetes objects
(strict schema), and embeds a tfgate config that tfgate's own checker accepts. The security
properties of the rendered objects are in test_helm_security.py; the image in
test_helm_image.py. The helpers and the values matrix here are shared with both."""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml

from proxy.config import Config
from tfgate_dev.devpki import DevPKI, SigningKey, write_jwks

helm_python = pytest.importorskip("helm_python")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

REPO = pathlib.Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "tfgate"


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"helm_{name}", REPO / "helm" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = _load("check")
schema_module = _load("schema")

TEAM_A = {"name": "team-a", "principals": {"spiffe": ["spiffe://example.org/team-a/*"]},
          "methods": ["Predict"], "models": ["half_plus_two"]}
BATCH = {"name": "batch", "principals": {"iss": ["https://idp"], "scopes": ["predict"]},
         "require": ["token"], "methods": ["Predict"], "models": ["churn"]}
JWT = {"jwt": {"issuers": [{"issuer": "https://idp", "audiences": ["tfgate"],
                            "algorithms": ["ES256"], "jwks_file": "/etc/tfgate/jwks/jwks.json"}]}}
STANDALONE = {"mode": "standalone",
              "standalone": {"upstream": {"address": "modelserver.serving.svc:8500"},
                             "modelServer": {"namespace": "serving",
                                             "podSelector": {"app": "modelserver"}}}}
JOB_ID = "spiffe://example.org/ns/ml/sa/trainer"
# What the job's tasks call on each other (docs/cluster.md, Worker <-> worker), for the
# one identity every task pod's certificate carries.
JOB_RULE = {"name": "job", "principals": {"spiffe": [JOB_ID]},
            "methods": ["GetStatus", "CreateContext", "UpdateContext", "Enqueue",
                        "StreamingEnqueue", "WaitQueueDone", "KeepAlive", "CloseContext",
                        "RecvTensor", "RecvBuf", "CompleteGroup", "CompleteInstance",
                        "GetStepSequence", "MarkRecvFinished"],
            "ops": {"lift": ["CollectiveReduceV2"]}}
CLUSTER = {"mode": "cluster", "cluster": {"identity": JOB_ID,
                                          "container": {"image": {"repository": "trainer",
                                                                  "tag": "1"}}}}


def _with(*parts: dict) -> dict:
    """Deep-merge value dicts, later ones winning."""
    out: dict = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = _with(out[key], value)
            else:
                out[key] = value
    return out


def rules(*granted: dict) -> dict:
    return {"config": {"policy": {"rules": list(granted)}}}


# The values every test of the rendered objects runs over: each mode, and the knobs that
# change what is rendered.
MATRIX: dict[str, dict] = {
    "sidecar": rules(TEAM_A),
    "sidecar-jwt": _with(rules(TEAM_A, BATCH), {"config": {"authn": JWT},
                                                "jwks": {"secretName": "idp-jwks"}}),
    "sidecar-token-only": _with(rules(BATCH), {"config": {
        "authn": JWT, "listen": {"tls": {"client_auth": "none"}}},
        "jwks": {"secretName": "idp-jwks"}}),
    "sidecar-no-admin": _with(rules(TEAM_A), {"admin": {"enabled": False}}),
    "sidecar-knobs": _with(rules(TEAM_A), {
        "reload": "file", "workers": 2, "extraArgs": ["--no-pin"],
        "extraEnv": [{"name": "TZ", "value": "UTC"}],
        "imagePullSecrets": [{"name": "regcred"}], "nodeSelector": {"pool": "ml"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "pool", "operator": "In", "values": ["ml"]}]}]}}},
        "podAnnotations": {"team": "ml"}, "podLabels": {"cost": "ml"},
        "priorityClassName": "serving", "extraSecretMounts": [{"name": "keys",
                                                               "secretName": "idp-keys"}],
        "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "2", "memory": "1Gi"}},
        "config": {"server": {"grace_s": 12.5}}}),
    "sidecar-model-config": _with(rules(TEAM_A), {"sidecar": {"modelServer": {
        "modelConfigFile": "/models/models.config",
        "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "models"}}],
        "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
                    "ports": [{"protocol": "TCP", "port": 443}]}]}}}),
    "sidecar-operated": _with(rules(TEAM_A), {
        "tls": {"certManager": {"enabled": True, "issuerRef": {"name": "ca"},
                                "uris": ["spiffe://example.org/ns/ml/sa/tfgate"]}},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
        "autoscaling": {"enabled": True}, "podDisruptionBudget": {"enabled": False},
        "networkPolicy": {"metricsFrom": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "monitoring"}}}]}}),
    "sidecar-full-config": _with(rules(TEAM_A), {"config": {
        "listen": {"max_message_bytes": 8388608, "max_calls_per_peer": 64,
                   "receive_timeout_s": 5, "keepalive": {"max_idle_s": 120}},
        "limits": {"tensors": {"max_elements": 1048576},
                   "rate": {"rate": 50, "burst": 100},
                   "concurrency": {"per_principal": 8, "total": 256},
                   "deadline": {"max_s": 20, "default_s": 10},
                   "models": [{"models": ["half_plus_two"],
                               "tensors": {"max_batch": 64}}]},
        "identity": {"strip_metadata": ["x-debug"]},
        "audit": {"output": "stderr"}, "server": {"grace_s": 30}}}),
    "standalone": _with(STANDALONE, rules(TEAM_A)),
    "standalone-tls": _with(STANDALONE, rules(TEAM_A), {
        "replicaCount": 3,
        "standalone": {"upstream": {"address": "predictor.kserve.svc:9000", "tls": {
            "secretName": "upstream-tls", "clientCert": True, "serverName": "predictor"}},
                       "modelServer": {"ports": [9000, 8500]}},
        "networkPolicy": {"ingressFrom": [{"namespaceSelector": {"matchLabels": {
            "team": "a"}}}]},
        "topologySpreadConstraints": [{"maxSkew": 2, "topologyKey": "kubernetes.io/hostname",
                                       "whenUnsatisfiable": "DoNotSchedule",
                                       "labelSelector": {"matchLabels": {
                                           "app.kubernetes.io/name": "tfgate"}}}]}),
    "standalone-unfenced": _with(rules(TEAM_A), {"mode": "standalone", "standalone": {
        "upstream": {"address": "10.1.2.3:8500"}, "modelServer": {"fence": False}}}),
    # The REST front: translated in sidecar mode (ModelServer has no TCP port), either
    # way in standalone mode; token-only on REST beside mTLS on gRPC, and the reverse.
    "sidecar-rest": _with(rules(TEAM_A), {"rest": {"enabled": True}}),
    "sidecar-rest-tokens": _with(rules(TEAM_A, BATCH), {
        "rest": {"enabled": True, "port": 9444}, "jwks": {"secretName": "idp-jwks"},
        "config": {"authn": JWT, "rest": {"tls": {"client_auth": "none"},
                                          "max_body_bytes": 4194304,
                                          "parse": {"threads": 1}}}}),
    "sidecar-token-only-rest-mtls": _with(rules(BATCH), {
        "rest": {"enabled": True}, "jwks": {"secretName": "idp-jwks"},
        "config": {"authn": JWT, "listen": {"tls": {"client_auth": "none"}},
                   "rest": {"tls": {"client_auth": "require"}}}}),
    "standalone-rest": _with(STANDALONE, rules(TEAM_A), {
        "rest": {"enabled": True},
        "networkPolicy": {"ingressFrom": [{"namespaceSelector": {"matchLabels": {
            "team": "a"}}}]}}),
    "standalone-rest-native": _with(STANDALONE, rules(TEAM_A), {
        "rest": {"enabled": True, "upstream": "native"},
        "standalone": {"upstream": {
            "restAddress": "https://modelserver.serving.svc:8501",
            "tls": {"secretName": "upstream-tls", "serverName": "modelserver"}}}}),
    "cluster": CLUSTER,
    "cluster-roles": _with(CLUSTER, {
        "port": 9443, "cluster": {"tfPort": 2300, "localPortBase": 2400,
                                  "tasks": [{"name": "chief", "replicas": 1},
                                            {"name": "worker", "replicas": 3},
                                            {"name": "ps", "replicas": 2}],
                                  "ingressFrom": [{"podSelector": {"matchLabels": {
                                      "app": "tf-client"}}}]},
        "tls": {"certManager": {"enabled": True, "issuerRef": {"name": "ca"}}}}),
    # The identity from cert-manager's uris, a policy of the job's own, an egress policy
    # narrower than the ingress's, no admin listener (egresses unprobed), pods rolled.
    "cluster-knobs": _with(CLUSTER, {
        "admin": {"enabled": False}, "reload": "roll",
        "cluster": {"identity": "", "localPortBase": 3100,
                    "tasks": [{"name": "chief", "replicas": 1},
                              {"name": "worker", "replicas": 2},
                              {"name": "ps", "replicas": 1}],
                    "egress": {"policy": {"rules": [{**JOB_RULE, "name": "pull-only",
                                                     "methods": ["GetStatus", "RecvTensor"]}]},
                               "resources": {"limits": {"cpu": "500m", "memory": "200Mi"}},
                               "tfgateConfig": {"audit": {"output": "stderr"}}}},
        "tls": {"certManager": {"enabled": True, "issuerRef": {"name": "ca"},
                                "uris": [JOB_ID]}},
        "config": {"policy": {"rules": [JOB_RULE]},
                   "limits": {"concurrency": {"per_principal": 512}}}}),
}


def render_files(values: dict, name: str = "demo", namespace: str = "ml") -> dict[str, str]:
    with helm_python.Chart.load(CHART) as chart:
        return chart.render(values=values, name=name, namespace=namespace)


def render(values: dict, **where: str) -> list[dict]:
    """The rendered objects, as `helm template` prints them (NOTES.txt aside)."""
    files = render_files(values, **where)
    return [doc for path, text in files.items() if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text) if doc]


def manifests_text(values: dict) -> str:
    files = render_files(values)
    return "\n---\n".join(t for p, t in files.items() if not p.endswith("NOTES.txt"))


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str) -> dict:
    (found,) = of_kind(objects, kind)
    return found


def pod_specs(objects: list[dict]) -> list[dict]:
    return [o["spec"]["template"]["spec"] for o in objects
            if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


def container(pod: dict, name: str) -> dict:
    (found,) = [c for c in pod["containers"] if c["name"] == name]
    return found


def all_containers(pod: dict) -> list[dict]:
    return pod["containers"] + pod.get("initContainers", [])


def tfgate_config(objects: list[dict]) -> dict:
    """The ingress's config (tfgate.yaml; cluster mode's egress configs aside)."""
    (found,) = [doc for name, doc in check.configs_in(yaml.safe_dump_all(objects))
                if "/" not in name]
    return found


def checkable(doc: dict) -> tuple[dict, list[str]]:
    """A rendered config, whole: every section the chart writes is one tfgate knows."""
    left_out = [k for k in doc if k not in Config.model_fields]
    assert left_out == [], f"unknown sections {left_out}"
    return doc, left_out


@pytest.fixture(scope="module")
def pod_files(tmp_path_factory) -> pathlib.Path:
    """Real files standing for the pod's /etc/tfgate: certificates, keys and a JWKS."""
    root = tmp_path_factory.mktemp("etc-tfgate")
    pki = DevPKI.create(root / "pki")
    server, client = pki.server(), pki.client("tfgate")
    files = {"tls/tls.crt": server.cert_pem, "tls/tls.key": server.key_pem,
             "client-ca/ca.crt": pki.ca.cert_pem, "upstream-tls/ca.crt": pki.ca.cert_pem,
             "upstream-tls/tls.crt": client.cert_pem, "upstream-tls/tls.key": client.key_pem}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "jwks").mkdir()
    write_jwks(root / "jwks" / "jwks.json", [SigningKey.generate("k")])
    return root


class TestLint:
    @pytest.mark.parametrize("case", ["sidecar", "standalone", "cluster", "sidecar-rest",
                                      "standalone-rest-native"])
    def test_lint_has_no_errors(self, case):
        """`helm lint` (strict: warnings fail too) finds nothing in any mode."""
        report = helm_python.lint(str(CHART), MATRIX[case], strict=True)
        assert report["errors"] == [], report
        assert [m for m in report["messages"] if m["severity"] >= 2] == []

    def test_notes_name_the_way_in(self):
        """NOTES.txt tells where clients call and how to check a policy before deploying."""
        notes = render_files(MATRIX["standalone"])["tfgate/templates/NOTES.txt"]
        assert "demo-tfgate.ml.svc:8443" in notes
        assert "helm/check.py" in notes
        notes = render_files(MATRIX["cluster"])["tfgate/templates/NOTES.txt"]
        assert "demo-tfgate-worker-<i>.demo-tfgate-worker.ml.svc" in notes


# Kinds the chart may render from CRDs (no bundled schema): the keys it may use, each level
# closed, checked by hand against the CRDs' documented fields.
CRD_FIELDS = {
    ("cert-manager.io/v1", "Certificate"): {
        "secretName", "duration", "renewBefore", "privateKey", "usages", "dnsNames", "uris",
        "issuerRef"},
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {"selector", "endpoints"},
}


def validate_object(obj: dict) -> None:
    key = (obj["apiVersion"], obj["kind"])
    if key in CRD_FIELDS:
        assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
        assert set(obj["spec"]) <= CRD_FIELDS[key], obj["spec"]
        return
    kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)


class TestManifests:
    @pytest.mark.parametrize("case", MATRIX)
    def test_every_object_is_valid_kubernetes(self, case):
        """Every rendered object validates strictly (unknown fields fail) for Kubernetes."""
        objects = render(MATRIX[case])
        assert objects
        for obj in objects:
            validate_object(obj)

    def test_objects_per_mode(self):
        kinds = {case: sorted(o["kind"] for o in render(MATRIX[case]))
                 for case in ("sidecar", "standalone", "cluster", "sidecar-operated")}
        assert kinds["sidecar"] == ["ConfigMap", "Deployment", "NetworkPolicy",
                                    "PodDisruptionBudget", "Service", "ServiceAccount"]
        assert kinds["standalone"] == ["ConfigMap", "Deployment", "NetworkPolicy",
                                       "NetworkPolicy", "PodDisruptionBudget", "Service",
                                       "ServiceAccount"]
        assert kinds["cluster"] == ["ConfigMap", "NetworkPolicy", "Service", "Service",
                                    "ServiceAccount", "StatefulSet", "StatefulSet"]
        assert kinds["sidecar-operated"] == [
            "Certificate", "ConfigMap", "Deployment", "HorizontalPodAutoscaler",
            "NetworkPolicy", "Service", "Service", "ServiceAccount", "ServiceMonitor"]

    def test_config_paths_are_mounted(self):
        """Every file the config names lies in a volume the tfgate container mounts, and
        its addresses are the ports the container declares."""
        for case in MATRIX:
            objects = render(MATRIX[case])
            doc = tfgate_config(objects)
            for pod in pod_specs(objects):
                tfgate = container(pod, "tfgate")
                mounts = [m["mountPath"] + "/" for m in tfgate["volumeMounts"]]
                for path in check._mounted_paths(doc):
                    assert any(path.startswith(m) for m in mounts), (case, path)
                ports = {p["name"]: p["containerPort"] for p in tfgate["ports"]}
                assert doc["listen"]["address"] == f"0.0.0.0:{ports['grpc']}"
                if "admin" in doc:
                    assert doc["admin"]["address"] == f"0.0.0.0:{ports['admin']}"
                if "rest" in doc:
                    assert doc["rest"]["address"] == f"0.0.0.0:{ports['rest']}"

    def test_grace_period_follows_server_grace(self):
        """terminationGracePeriodSeconds = preStop + ceil(server.grace_s) + margin, and
        ModelServer outlives tfgate's drain."""
        values = MATRIX["sidecar-knobs"]  # grace_s 12.5
        objects = render(values)
        pod = pod_specs(objects)[0]
        assert tfgate_config(objects)["server"]["grace_s"] == 12.5
        assert pod["terminationGracePeriodSeconds"] == 5 + math.ceil(12.5) + 5
        tfgate, modelserver = container(pod, "tfgate"), container(pod, "modelserver")
        assert tfgate["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
        assert modelserver["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "18"]
        longer = render(_with(values, {"lifecycle": {"preStopSleepSeconds": 10}}))
        assert pod_specs(longer)[0]["terminationGracePeriodSeconds"] == 10 + 13 + 5

    def test_probes_use_the_admin_endpoints(self):
        """Startup and liveness probe /healthz, readiness /readyz, on the admin port;
        without the admin listener they fall back to TCP on the gRPC port."""
        tfgate = container(pod_specs(render(MATRIX["sidecar"]))[0], "tfgate")
        assert tfgate["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
        assert tfgate["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
        assert tfgate["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
        assert tfgate["startupProbe"]["failureThreshold"] == 30
        plain = container(pod_specs(render(MATRIX["sidecar-no-admin"]))[0], "tfgate")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert plain[probe]["tcpSocket"] == {"port": "grpc"}
        assert [p["name"] for p in plain["ports"]] == ["grpc"]
        assert "admin" not in tfgate_config(render(MATRIX["sidecar-no-admin"]))

    def test_reload_roll_changes_the_pod_when_the_config_changes(self):
        def annotations(values: dict) -> dict:
            template = one(render(values), "Deployment")["spec"]["template"]
            return template["metadata"].get("annotations", {})

        roll = {"reload": "roll"}
        first = annotations(_with(MATRIX["sidecar"], roll))["checksum/config"]
        second = annotations(_with(rules(TEAM_A, {**TEAM_A, "name": "b"}), roll))[
            "checksum/config"]
        assert first != second

    def test_reload_file_keeps_pods_and_mounts_the_directory(self):
        """reload: file renders no checksum (pods stay) and mounts the ConfigMap as a
        directory, so the kubelet's symlink swap reaches the file tfgate watches."""
        objects = render(MATRIX["sidecar-knobs"])
        deployment = one(objects, "Deployment")
        assert "checksum/config" not in deployment["spec"]["template"]["metadata"]["annotations"]
        (mount,) = [m for m in container(pod_specs(objects)[0], "tfgate")["volumeMounts"]
                    if m["name"] == "config"]
        assert mount == {"name": "config", "mountPath": "/etc/tfgate/config", "readOnly": True}

    def test_knobs_reach_the_pod(self):
        objects = render(MATRIX["sidecar-knobs"])
        pod = pod_specs(objects)[0]
        tfgate = container(pod, "tfgate")
        assert tfgate["args"] == ["serve", "--config", "/etc/tfgate/config/tfgate.yaml",
                                  "--workers", "2", "--no-pin"]
        assert {"name": "TZ", "value": "UTC"} in tfgate["env"]
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        assert pod["nodeSelector"] == {"pool": "ml"}
        assert pod["tolerations"][0]["key"] == "gpu"
        assert "nodeAffinity" in pod["affinity"]
        assert pod["priorityClassName"] == "serving"
        assert tfgate["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}
        template = one(objects, "Deployment")["spec"]["template"]
        assert template["metadata"]["annotations"]["team"] == "ml"
        assert template["metadata"]["labels"]["cost"] == "ml"
        assert {"name": "extra-keys", "mountPath": "/etc/tfgate/extra/keys",
                "readOnly": True} in tfgate["volumeMounts"]

    def test_metrics_annotations_and_service_monitor(self):
        template = one(render(MATRIX["sidecar"]), "Deployment")["spec"]["template"]
        assert template["metadata"]["annotations"]["prometheus.io/port"] == "9901"
        objects = render(MATRIX["sidecar-operated"])
        monitor = one(objects, "ServiceMonitor")
        assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
        assert monitor["metadata"]["labels"]["release"] == "prom"
        metrics = [s for s in of_kind(objects, "Service") if s["metadata"]["name"].endswith(
            "-metrics")]
        assert [p["targetPort"] for p in metrics[0]["spec"]["ports"]] == ["admin"]

    def test_certificate_from_cert_manager(self):
        objects = render(MATRIX["sidecar-operated"])
        cert = one(objects, "Certificate")["spec"]
        assert cert["secretName"] == "tfgate-tls"
        assert cert["issuerRef"]["name"] == "ca"
        assert "demo-tfgate.ml.svc" in cert["dnsNames"]
        assert cert["uris"] == ["spiffe://example.org/ns/ml/sa/tfgate"]
        cluster = one(render(MATRIX["cluster-roles"]), "Certificate")["spec"]
        assert "*.demo-tfgate-worker.ml.svc" in cluster["dnsNames"]

    def test_standalone_workload(self):
        """A Deployment with a PDB and spread; HPA owns the replicas when enabled."""
        objects = render(MATRIX["standalone-tls"])
        deployment = one(objects, "Deployment")
        assert deployment["spec"]["replicas"] == 3
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        pod = deployment["spec"]["template"]["spec"]
        assert [c["name"] for c in pod["containers"]] == ["tfgate"]
        assert pod["topologySpreadConstraints"][0]["whenUnsatisfiable"] == "DoNotSchedule"
        assert one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
        default = one(render(MATRIX["standalone"]), "Deployment")["spec"]["template"]["spec"]
        assert [t["topologyKey"] for t in default["topologySpreadConstraints"]] == [
            "topology.kubernetes.io/zone", "kubernetes.io/hostname"]
        scaled = render(MATRIX["sidecar-operated"])
        assert "replicas" not in one(scaled, "Deployment")["spec"]
        hpa = one(scaled, "HorizontalPodAutoscaler")["spec"]
        assert hpa["scaleTargetRef"]["name"] == "demo-tfgate"
        upstream = tfgate_config(objects)["upstreams"]["modelserver"]
        assert upstream == {"address": "predictor.kserve.svc:9000", "tls": {
            "ca": "/etc/tfgate/upstream-tls/ca.crt", "cert": "/etc/tfgate/upstream-tls/tls.crt",
            "key": "/etc/tfgate/upstream-tls/tls.key", "server_name": "predictor"}}

    def test_cluster_tasks(self):
        """A StatefulSet and a headless Service per role; each task's tfgate forwards to
        its own tf.distribute.Server on loopback, as an upstream of kind cluster."""
        objects = render(MATRIX["cluster-roles"])
        sets = {s["metadata"]["name"]: s for s in of_kind(objects, "StatefulSet")}
        assert {n: s["spec"]["replicas"] for n, s in sets.items()} == {
            "demo-tfgate-chief": 1, "demo-tfgate-worker": 3, "demo-tfgate-ps": 2}
        for name, sts in sets.items():
            assert sts["spec"]["serviceName"] == name
            pod = sts["spec"]["template"]["spec"]
            names = [c["name"] for c in pod["containers"]]
            assert (names[0], names[-1]) == ("tfgate", "tensorflow")  # egresses between
        services = {s["metadata"]["name"]: s["spec"] for s in of_kind(objects, "Service")}
        assert set(services) == set(sets)
        assert all(s["clusterIP"] == "None" for s in services.values())
        doc = tfgate_config(objects)
        assert doc["upstreams"] == {"tensorflow": {"kind": "cluster",
                                                   "address": "127.0.0.1:2300"}}
        assert doc["listen"]["address"] == "0.0.0.0:9443"
        env = {e["name"]: e for e in container(sets["demo-tfgate-worker"]["spec"]["template"][
            "spec"], "tensorflow")["env"]}
        peers = json.loads(env["TFGATE_PEERS"]["value"])
        assert peers["worker"] == [f"demo-tfgate-worker-{i}.demo-tfgate-worker.ml.svc:9443"
                                   for i in range(3)]
        assert len(peers["ps"]) == 2 and env["TFGATE_TASK_TYPE"]["value"] == "worker"
        assert "pod-index" in env["TFGATE_TASK_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]

    def test_cluster_config_passes_through_verbatim(self):
        """cluster.tfgateConfig is deep-merged into the config as given: keys this chart
        does not know yet (the egress listener) arrive unchanged."""
        egress = {"address": "127.0.0.1:2400", "identity": {"spiffe": "spiffe://x/job"},
                  "routes": [{"task": "worker", "to": "demo-tfgate-worker-0:8443"}]}
        values = _with(CLUSTER, {"cluster": {"tfgateConfig": {
            "egress": egress, "upstreams": {"tensorflow": {"max_message_bytes": 1024}}}}})
        doc = tfgate_config(render(values))
        assert doc["egress"] == egress
        assert doc["upstreams"]["tensorflow"] == {"kind": "cluster", "address": "127.0.0.1:2222",
                                                  "max_message_bytes": 1024}


class TestConfigCheck:
    """tfgate's own checker accepts the config of every render, and refuses a bad policy
    at template time (helm/check.py), not at pod start."""

    @pytest.mark.parametrize("case", MATRIX)
    def test_rendered_config_passes_tfgate_check(self, case, pod_files):
        """`tfgate check` semantics: the config, then the certificates, keys and JWKS it
        names (real files standing for the Secrets)."""
        for _name, doc in check.configs_in(manifests_text(MATRIX[case])):
            doc, _not_yet = checkable(doc)
            code, said = check.check_with_files(doc, pod_files)
            assert code == 0, said
            assert said.endswith(f"ok ({len(doc['policy']['rules'])} rules, 1 upstreams)")

    def test_semantic_errors_fail_at_template_time(self):
        """A token rule without authn.jwt passes the values schema (each key is right) but
        tfgate's checker refuses it, naming the rule."""
        text = manifests_text(_with(rules(BATCH), {"admin": {"enabled": False}}))
        ((_name, doc),) = check.configs_in(text)
        with pytest.raises(check.ConfigError, match=r"policy\.rules\[0\]: needs tokens"):
            check.check_config(doc)
        deadline = _with(rules(TEAM_A), {"admin": {"enabled": False}, "config": {
            "limits": {"deadline": {"max_s": 5, "default_s": 10}}}})
        ((_name, doc),) = check.configs_in(manifests_text(deadline))
        with pytest.raises(check.ConfigError, match="default_s must not exceed max_s"):
            check.check_config(doc)

    def test_check_script_on_helm_template_output(self, tmp_path):
        """`helm template ... | python helm/check.py` exits 0 for a good config and 2 for a
        bad one, one line per ConfigMap (a real process, as CI would run it)."""
        good = manifests_text(_with(rules(TEAM_A), {"admin": {"enabled": False}}))
        bad = manifests_text(_with(rules(BATCH), {"admin": {"enabled": False}}))
        for text, code, said in ((good, 0, "demo-tfgate: ok (1 rules, 1 upstreams)"),
                                 (bad, 2, "demo-tfgate: config error: policy.rules[0]")):
            done = subprocess.run([sys.executable, str(REPO / "helm" / "check.py")],
                                  input=text, capture_output=True, text=True, timeout=120)
            assert done.returncode == code, done.stderr
            assert done.stdout.startswith(said)
        empty = subprocess.run([sys.executable, str(REPO / "helm" / "check.py")], input="",
                               capture_output=True, text=True, timeout=120)
        assert empty.returncode == 2 and "no ConfigMap" in empty.stderr


def documented_values() -> dict[str, dict]:
    """The values files README.md and docs/kubernetes.md write with `cat > NAME.yaml`."""
    found = {}
    for doc in ("README.md", "docs/kubernetes.md"):
        text = (REPO / doc).read_text()
        for name, body in re.findall(r"cat > (\S+)\.yaml <<'EOF'\n(.*?)\nEOF\n", text, re.S):
            found[f"{doc}:{name}"] = yaml.safe_load(body)
    return found


class TestDocumentedInstalls:
    def test_each_mode_has_a_documented_install(self):
        for doc in ("README.md", "docs/kubernetes.md"):
            modes = {values.get("mode", "sidecar") for name, values in
                     documented_values().items() if name.startswith(doc + ":")}
            assert modes == {"sidecar", "standalone", "cluster"}, doc

    @pytest.mark.parametrize("name", sorted(documented_values()))
    def test_documented_values_render_valid_and_checked(self, name):
        """The copy-paste installs in docs/kubernetes.md render, validate and pass the
        config checker as written."""
        values = documented_values()[name]
        objects = render(values)
        for obj in objects:
            validate_object(obj)
        for _name, doc in check.configs_in(yaml.safe_dump_all(objects)):  # egresses too
            doc, _not_yet = checkable(doc)
            check.check_config(doc)


class TestValuesSchema:
    def test_committed_schema_is_current(self):
        """values.schema.json is regenerated from proxy/config/ (`python helm/schema.py`)."""
        assert (CHART / "values.schema.json").read_text() == schema_module.render(), (
            "helm/tfgate/values.schema.json is stale: run python helm/schema.py")

    def test_every_config_section_is_a_value(self):
        """Each section of tfgate's config is settable under `config`, but for the keys
        the chart derives from the pod; a section added to Config appears by itself."""
        document = json.loads((CHART / "values.schema.json").read_text())
        sections = set(document["properties"]["config"]["properties"])
        owned = set(schema_module.CHART_OWNED[""])
        assert sections == set(Config.model_fields) - owned
        assert {"listen", "authn", "identity", "policy", "limits", "audit", "server"} <= sections

    def test_a_new_section_appears_with_chart_owned_keys_removed(self, monkeypatch):
        """When tfgate's Config gains a section (here a stand-in `admin`), the generated
        schema offers it under `config`, without the keys the chart owns (its address)."""
        from pydantic import Field

        from proxy.config import Section

        class Admin(Section):
            address: str = Field("127.0.0.1:9901", description="host:port.")
            metrics: bool = Field(True, description="Serve /metrics.")

        class WithAdmin(Config):
            admin: Admin = Field(default_factory=Admin, description="Admin listener.")

        monkeypatch.setattr(schema_module.config, "Config", WithAdmin)
        document = schema_module.schema()
        admin = document["properties"]["config"]["properties"]["admin"]
        name = admin["$ref"].rsplit("/", 1)[1]
        assert set(document["$defs"][name]["properties"]) == {"metrics"}

    def test_default_values_pass_the_schema(self):
        with helm_python.Chart.load(CHART) as chart:
            chart.validate_schema(chart.values)

    @pytest.mark.parametrize(("values", "message"), [
        ({"replicas": 3}, "at '': additional properties 'replicas' not allowed"),
        ({"mode": "daemonset"}, "at '/mode'"),
        ({"config": {"polciy": {}}}, "at '/config': additional properties 'polciy' not allowed"),
        (rules({**TEAM_A, "modles": ["x"]}),
         "at '/config/policy/rules/0': additional properties 'modles' not allowed"),
        ({"config": {"upstreams": {"x": {"address": "a:1"}}}},
         "at '/config': additional properties 'upstreams' not allowed"),
        ({"config": {"listen": {"address": "0.0.0.0:1"}}},
         "at '/config/listen': additional properties 'address' not allowed"),
        ({"config": {"listen": {"tls": {"cert": "/x"}}}},
         "at '/config/listen/tls': additional properties 'cert' not allowed"),
        ({"config": {"limits": {"tensors": {"max_dims": 300}}}},
         "at '/config/limits/tensors/max_dims'"),
        ({"config": {"server": {"grace_s": "soon"}}}, "at '/config/server/grace_s'"),
        ({"port": 70000}, "at '/port'"),
        ({"sidecar": {"modelServer": {"image": {"tag": 2.21}}}},
         "at '/sidecar/modelServer/image/tag'"),
        ({"networkPolicy": {"enable": False}},
         "at '/networkPolicy': additional properties 'enable' not allowed"),
        ({"reload": "sighup"}, "at '/reload'"),
    ])
    def test_schema_refuses_bad_values_with_the_key(self, values, message):
        """A bad value fails `helm template`/`install` with the key's path in the message."""
        with pytest.raises(helm_python.HelmValuesError) as refused:
            render(values)
        assert message in str(refused.value)

    @pytest.mark.parametrize(("values", "message"), [
        ({"sidecar": {"modelServer": {"extraArgs": ["--port=8500"]}}},
         'sidecar.modelServer.extraArgs: "--port=8500" is set by the chart'),
        ({"sidecar": {"modelServer": {"extraArgs": ["--rest_api_port=8501"]}}},
         '"--rest_api_port=8501" is set by the chart'),
        ({"mode": "standalone"}, "standalone.upstream.address: required"),
        ({"mode": "standalone", "standalone": {"upstream": {"address": "m:8500"}}},
         "standalone.modelServer.podSelector: required"),
        ({"mode": "cluster"}, "cluster.container.image.repository: required"),
        (_with(CLUSTER, {"cluster": {"tfPort": 8443}}), "cluster.tfPort must differ"),
        ({"admin": {"port": 8443}}, "admin.port must differ from port"),
        ({"tls": {"certManager": {"enabled": True}}}, "tls.certManager.issuerRef.name"),
    ])
    def test_chart_refuses_what_the_schema_cannot_say(self, values, message):
        with pytest.raises(helm_python.HelmRenderError) as refused:
            render(values)
        assert message in str(refused.value)

    def test_admin_section_needs_the_admin_listener(self):
        with pytest.raises(helm_python.HelmRenderError, match=r"admin\.enabled is false"):
            render({"admin": {"enabled": False}, "config": {"admin": {}}})
