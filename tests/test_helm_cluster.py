"""The chart's cluster mode, whole: one loopback ClusterSpec for the job, an egress tfgate
per peer task in every pod (plaintext on loopback, the pod's identity, mTLS to the peer's
ingress), no two listeners of a pod on one port, and the refusals that keep it so
(docs/kubernetes.md, Cluster mode; docs/cluster.md, Topologies). Strict Kubernetes
validation and tfgate's checker run over these cases in test_helm.py (MATRIX), the
container lockdown in test_helm_security.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.test_helm import (
    CLUSTER,
    JOB_ID,
    MATRIX,
    _with,
    check,
    container,
    helm_python,
    manifests_text,
    of_kind,
    one,
    render,
    tfgate_config,
)

CLUSTER_CASES = [case for case, values in MATRIX.items() if values.get("mode") == "cluster"]
DEFAULT_TASKS = [{"name": "chief", "replicas": 1}, {"name": "worker", "replicas": 2}]


def values_of(case: str) -> dict[str, Any]:
    """The case's cluster values with the chart's defaults filled in."""
    values = MATRIX[case]
    given = values["cluster"]
    return {"port": values.get("port", 8443), "tfPort": given.get("tfPort", 2222),
            "base": given.get("localPortBase", 2300),
            "admin": values.get("admin", {}).get("enabled", True),
            "tasks": given.get("tasks", DEFAULT_TASKS)}


def task_ids(case: str) -> list[str]:
    """Every task of the job, in ClusterSpec port order."""
    return [f"{t['name']}-{i}" for t in values_of(case)["tasks"] for i in range(t["replicas"])]


def egress_configs(objects: list[dict]) -> dict[str, dict]:
    """ConfigMap key -> egress config."""
    return {name.split("/", 1)[1]: doc
            for name, doc in check.configs_in(yaml.safe_dump_all(objects)) if "/" in name}


def task_pods(objects: list[dict]) -> dict[str, dict]:
    """Role -> its StatefulSet's pod spec."""
    return {s["metadata"]["labels"]["app.kubernetes.io/component"]:
            s["spec"]["template"]["spec"] for s in of_kind(objects, "StatefulSet")}


def env_of(pod: dict) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom"))
            for e in container(pod, "tensorflow")["env"]}


def egress_containers(pod: dict) -> list[dict]:
    return [c for c in pod["containers"] if c["name"].startswith("egress-")]


def config_key(item: dict) -> str:
    (path,) = [a for a in item["args"] if a.startswith("/etc/tfgate/config/")]
    return path.removeprefix("/etc/tfgate/config/")


def flat(by_role: dict[str, list[str]]) -> list[str]:
    return [address for addresses in by_role.values() for address in addresses]


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


@pytest.fixture(scope="module", params=CLUSTER_CASES)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(MATRIX[request.param])


class TestClusterSpec:
    def test_one_loopback_spec_for_every_pod(self, rendered):
        """TFGATE_CLUSTER_SPEC is the same string in every pod, names only loopback
        addresses, and gives task k of the job (tasks order) localPortBase + k."""
        case, objects = rendered
        want = values_of(case)
        specs = {role: env_of(pod)["TFGATE_CLUSTER_SPEC"]
                 for role, pod in task_pods(objects).items()}
        assert len(set(specs.values())) == 1, specs
        spec = json.loads(next(iter(specs.values())))
        assert set(spec) == {t["name"] for t in want["tasks"]}
        ordered = [spec[t["name"]][i] for t in want["tasks"] for i in range(t["replicas"])]
        assert ordered == [f"127.0.0.1:{want['base'] + k}" for k in range(len(ordered))]

    def test_tf_container_env(self, rendered):
        """The task's role and index, the port its server binds, and the peers' ingress
        (for tools with a certificate: never a ClusterSpec address)."""
        case, objects = rendered
        want = values_of(case)
        for role, pod in task_pods(objects).items():
            env = env_of(pod)
            assert env["TFGATE_TASK_TYPE"] == role
            assert env["TFGATE_TASK_INDEX"] == {"fieldRef": {
                "fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}
            assert env["TFGATE_TF_PORT"] == str(want["tfPort"])
            peers = json.loads(env["TFGATE_PEERS"])
            assert peers[role] == [
                f"demo-tfgate-{role}-{i}.demo-tfgate-{role}.ml.svc:{want['port']}"
                for i in range(len(peers[role]))]
            spec = json.loads(env["TFGATE_CLUSTER_SPEC"])
            assert not set(flat(peers)) & set(flat(spec))

    def test_cluster_addresses_default_to_the_spec(self, rendered):
        """Ingress and egresses let a ClusterDef name the job's loopback addresses (what
        CreateContext and CreateWorkerSession carry), nothing else by default."""
        _case, objects = rendered
        spec = json.loads(env_of(next(iter(task_pods(objects).values())))[
            "TFGATE_CLUSTER_SPEC"])
        addresses = sorted(flat(spec))
        for doc in [tfgate_config(objects), *egress_configs(objects).values()]:
            assert sorted(doc["cluster"]["addresses"]) == addresses

    def test_given_cluster_addresses_are_kept(self):
        objects = render(_with(CLUSTER, {"config": {"cluster": {
            "addresses": ["127.0.0.1:23*"], "tensors": {"max_tensor_bytes": 1024}}}}))
        for doc in [tfgate_config(objects), *egress_configs(objects).values()]:
            assert doc["cluster"] == {"addresses": ["127.0.0.1:23*"],
                                      "tensors": {"max_tensor_bytes": 1024}}


class TestEgress:
    def test_one_egress_per_task_it_may_call(self, rendered):
        """A pod has an egress per task of the job, its own task aside where its role has
        one replica (the template is shared by a role's pods otherwise); each reads its
        own ConfigMap key, and every key is used."""
        case, objects = rendered
        roles = {t["name"]: t["replicas"] for t in values_of(case)["tasks"]}
        keys = set(egress_configs(objects))
        assert keys == {f"egress-{t}.yaml" for t in task_ids(case)}
        for role, pod in task_pods(objects).items():
            egresses = egress_containers(pod)
            want = [t for t in task_ids(case) if not (roles[role] == 1 and t == f"{role}-0")]
            assert [c["name"] for c in egresses] == [f"egress-{t}" for t in want]
            assert [config_key(c) for c in egresses] == [f"egress-{t}.yaml" for t in want]

    def test_egress_forwards_to_its_peer_over_mtls(self, rendered):
        """Each egress listens plaintext on loopback at its task's ClusterSpec port, takes
        its callers to be the pod's identity, and forwards to that task's ingress only,
        with the pod's certificate, verifying the peer against the CA."""
        case, objects = rendered
        want = values_of(case)
        configs = egress_configs(objects)
        for k, task in enumerate(task_ids(case)):
            doc = configs[f"egress-{task}.yaml"]
            listen = doc["listen"]
            assert listen["address"] == f"127.0.0.1:{want['base'] + k}"
            assert listen["plaintext"] is True and "tls" not in listen
            assert listen["local_identity"] == JOB_ID
            role, index = task.rsplit("-", 1)
            (name, upstream), = doc["upstreams"].items()
            assert (name, upstream["kind"]) == (task, "cluster")
            assert upstream["address"] == (
                f"demo-tfgate-{role}-{index}.demo-tfgate-{role}.ml.svc:{want['port']}")
            assert upstream["tls"] == {"ca": "/etc/tfgate/client-ca/ca.crt",
                                       "cert": "/etc/tfgate/tls/tls.crt",
                                       "key": "/etc/tfgate/tls/tls.key"}

    def test_egress_files_are_mounted(self, rendered):
        """Every file an egress config names lies in a volume its container mounts."""
        _case, objects = rendered
        configs = egress_configs(objects)
        for pod in task_pods(objects).values():
            volumes = {v["name"] for v in pod["volumes"]}
            for item in egress_containers(pod):
                mounts = [m["mountPath"] + "/" for m in item["volumeMounts"]]
                assert {m["name"] for m in item["volumeMounts"]} <= volumes
                for path in check._mounted_paths(configs[config_key(item)]):
                    assert any(path.startswith(m) for m in mounts), (item["name"], path)

    def test_egress_policy_mirrors_the_ingress_by_default(self):
        """Without cluster.egress.policy an egress runs the ingress's rules (one identity
        for the job: a call leaves the pod only if the peer would admit it); given, it
        replaces them in the egresses only."""
        objects = render(MATRIX["cluster-knobs"])
        egress_policies = [d["policy"] for d in egress_configs(objects).values()]
        assert [r["name"] for p in egress_policies for r in p["rules"]] == ["pull-only"] * 4
        assert [r["name"] for r in tfgate_config(objects)["policy"]["rules"]] == ["job"]
        same = render(_with(MATRIX["cluster-knobs"], {"cluster": {"egress": {"policy": None}}}))
        ingress = tfgate_config(same)["policy"]
        assert all(d["policy"] == ingress for d in egress_configs(same).values())

    def test_egress_tfgate_config_is_merged_into_egresses_only(self):
        objects = render(MATRIX["cluster-knobs"])
        assert {d["audit"]["output"] for d in egress_configs(objects).values()} == {"stderr"}
        assert tfgate_config(objects)["audit"]["output"] == "stdout"

    def test_egress_containers_probe_their_own_admin_port(self, rendered):
        """The egress's listener is on loopback (no probe reaches it): with admin.enabled
        it is probed on /healthz of its own admin port, declared and in its config;
        without, it has neither ports nor probes. It is never probed for readiness (a
        peer down must not make this pod unready). Resources are cluster.egress's."""
        case, objects = rendered
        values = MATRIX[case]
        want = values_of(case)
        configs = egress_configs(objects)
        resources = _with({"requests": {"cpu": "20m", "memory": "96Mi"},
                           "limits": {"cpu": "1", "memory": "512Mi"}},
                          values["cluster"].get("egress", {}).get("resources", {}))
        for pod in task_pods(objects).values():
            for item in egress_containers(pod):
                doc = configs[config_key(item)]
                assert item["resources"] == resources
                assert "readinessProbe" not in item
                if not want["admin"]:
                    assert "admin" not in doc and "ports" not in item
                    assert "startupProbe" not in item and "livenessProbe" not in item
                    continue
                port = port_of(doc["admin"]["address"])
                assert item["ports"] == [{"containerPort": port, "protocol": "TCP"}]
                for probe in ("startupProbe", "livenessProbe"):
                    assert item[probe]["httpGet"] == {"path": "/healthz", "port": port}

    def test_no_two_listeners_of_a_pod_share_a_port(self, rendered):
        """The ingress (gRPC, admin), the TF server (tfPort) and every egress (loopback
        listener, admin) of a pod each have a port of their own: TF binds all
        interfaces, so a loopback listener on its port would clash too."""
        case, objects = rendered
        values = MATRIX[case]
        configs = egress_configs(objects)
        ingress = tfgate_config(objects)
        for role, pod in task_pods(objects).items():
            bound = [port_of(ingress["listen"]["address"]),
                     values["cluster"].get("tfPort", 2222)]
            bound += [port_of(ingress["admin"]["address"])] if "admin" in ingress else []
            for item in egress_containers(pod):
                doc = configs[config_key(item)]
                bound.append(port_of(doc["listen"]["address"]))
                bound += [port_of(doc["admin"]["address"])] if "admin" in doc else []
            assert len(bound) == len(set(bound)), (role, sorted(bound))
            declared = [p["containerPort"] for c in pod["containers"] for p in c.get("ports", [])]
            assert len(declared) == len(set(declared)), (role, declared)

    def test_every_config_passes_the_checker(self, rendered):
        """Ingress and each egress: tfgate's own checker, as helm/check.py runs it."""
        case, _objects = rendered
        found = check.configs_in(manifests_text(MATRIX[case]))
        assert [n for n, _ in found] == ["demo-tfgate"] + [
            f"demo-tfgate/egress-{t}.yaml" for t in task_ids(case)]
        for _name, doc in found:
            check.check_config(doc)


class TestNetworkPolicy:
    def test_only_tfgate_ports_are_admitted(self, rendered):
        """The pods admit the ingress port (and admin from metricsFrom) only: not the TF
        server, the egresses' loopback ports or their admin ports; and they may reach
        the other tasks on the ingress port only (besides DNS)."""
        case, objects = rendered
        want = values_of(case)
        own = one([p for p in of_kind(objects, "NetworkPolicy")
                   if p["metadata"]["name"] == "demo-tfgate"], "NetworkPolicy")
        admitted = {p["port"] for rule in own["spec"]["ingress"] for p in rule["ports"]}
        assert admitted <= {want["port"], 9901}
        egress_ports = [[p["port"] for p in rule["ports"]] for rule in own["spec"]["egress"]]
        assert egress_ports == [[53, 53], [want["port"]]]


class TestRefusals:
    @pytest.mark.parametrize(("values", "message"), [
        ({"cluster": {"identity": ""}}, "cluster.identity: required in cluster mode"),
        ({"config": {"listen": {"tls": {"client_auth": "none"}}}},
         "cluster mode needs config.listen.tls.client_auth: require"),
        ({"cluster": {"tfPort": 2301}}, "port 2301 is taken twice in a task pod: "
         "cluster.tfPort (the TF server) and cluster.localPortBase+k (task worker-0's"),
        ({"cluster": {"localPortBase": 8442}}, "port 8443 is taken twice in a task pod: "
         "port (the ingress) and cluster.localPortBase+k (task worker-0's"),
        ({"cluster": {"egress": {"adminPortBase": 9900}}}, "port 9901 is taken twice"),
        ({"cluster": {"egress": {"adminPortBase": 2301}}}, "port 2301 is taken twice"),
        ({"cluster": {"localPortBase": 65535}}, "past 65535"),
        ({"workers": 2}, "workers: a cluster upstream is served by one process"),
    ])
    def test_chart_refuses(self, values, message):
        with pytest.raises(helm_python.HelmRenderError) as refused:
            render(_with(CLUSTER, values))
        assert message in str(refused.value)

    @pytest.mark.parametrize(("values", "message"), [
        ({"cluster": {"identity": "trainer"}}, "at '/cluster/identity'"),
        ({"config": {"listen": {"local_identity": JOB_ID}}},
         "additional properties 'local_identity' not allowed"),
        ({"cluster": {"egress": {"policy": {"rulez": []}}}}, "at '/cluster/egress/policy'"),
        ({"cluster": {"egress": {"adminPort": 1}}}, "at '/cluster/egress'"),
    ])
    def test_schema_refuses(self, values, message):
        with pytest.raises(helm_python.HelmValuesError) as refused:
            render(_with(CLUSTER, values))
        assert message in str(refused.value)

    def test_identity_from_cert_manager_and_into_it(self):
        """With cert-manager the identity is the first of its uris, or, given, is added
        to them: the certificate the egresses present names what they claim."""
        knobs = render(MATRIX["cluster-knobs"])
        assert {d["listen"]["local_identity"] for d in egress_configs(knobs).values()} == {
            JOB_ID}
        issued = render(_with(CLUSTER, {"tls": {"certManager": {
            "enabled": True, "issuerRef": {"name": "ca"}, "uris": ["spiffe://x/other"]}}}))
        assert one(issued, "Certificate")["spec"]["uris"] == ["spiffe://x/other", JOB_ID]
