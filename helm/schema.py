"""Write helm/tfgate/values.schema.json.

Two halves. The chart's own knobs are declared here, every object closed
(`additionalProperties: false`), so a misspelt value fails `helm lint`/`template`/`install`
instead of being ignored. The `config` value is tfgate's config itself: its schema is
generated from the root `proxy.config.Config`, every section it has, so a section another
module adds appears here when this file is regenerated. The keys the chart derives from the
pod it renders (addresses, mounted file paths, upstreams) are taken out of that half, so
setting them is refused too. Checks that span keys (a rule that needs tokens but no
`authn.jwt`) are beyond JSON Schema: helm/check.py runs tfgate's own checker on the rendered
ConfigMap for those.

Run `python helm/schema.py` after changing proxy/config/; tests/test_helm.py checks that the
committed file is current.
"""

from __future__ import annotations

import copy
import json
import pathlib
import sys
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run as a script

from proxy import config

OUT = pathlib.Path(__file__).resolve().parent / "tfgate" / "values.schema.json"

# Keys of the tfgate config that the chart writes itself, by section ("" is the root).
CHART_OWNED: dict[str, tuple[str, ...]] = {
    "": ("upstreams", "routes", "default_upstream"),
    "listen": ("address", "plaintext", "local_identity"),
    "listen.tls": ("cert", "key", "client_ca"),
    "admin": ("address", "enabled", "allow_non_loopback"),
    "rest": ("address", "plaintext", "upstream"),
    "rest.tls": ("cert", "key", "client_ca"),
}

Schema = dict[str, Any]


def closed(properties: Schema, required: tuple[str, ...] = (), **extra: Any) -> Schema:
    """An object with exactly these keys."""
    out: Schema = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        out["required"] = list(required)
    return {**out, **extra}


STRING = {"type": "string"}
NAME = {"type": "string", "minLength": 1}
BOOL = {"type": "boolean"}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
COUNT = {"type": "integer", "minimum": 0}
STRINGS = {"type": "array", "items": STRING}
LABELS = {"type": "object", "additionalProperties": STRING}
# Kubernetes objects and lists passed through to the pod spec; the API server checks them.
K8S_OBJECT = {"type": "object"}
K8S_LIST = {"type": "array", "items": {"type": "object"}}
RESOURCES = closed({"limits": K8S_OBJECT, "requests": K8S_OBJECT, "claims": K8S_LIST})


def image(required: bool = False) -> Schema:
    return closed({"repository": NAME if required else STRING, "tag": STRING,
                   "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}})


def probe() -> Schema:
    return closed({key: {"type": "integer", "minimum": 1} for key in (
        "initialDelaySeconds", "periodSeconds", "timeoutSeconds", "failureThreshold",
        "successThreshold")})


# -- the tfgate config half ------------------------------------------------------------


def _ref_of(prop: Schema) -> tuple[Schema, str]:
    """The `{"$ref": ...}` node inside a property schema (direct or in anyOf) and its def."""
    for node in [prop, *prop.get("anyOf", [])]:
        if "$ref" in node:
            return node, node["$ref"].rsplit("/", 1)[1]
    raise ValueError(f"not a model reference: {prop}")


def _without(prop: Schema, keys: tuple[str, ...], defs: Schema) -> Schema:
    """Point `prop` at a copy of its model's schema lacking `keys`; return that copy."""
    node, name = _ref_of(prop)
    narrowed = copy.deepcopy(defs[name])
    for key in keys:
        narrowed["properties"].pop(key, None)
    narrowed["required"] = [k for k in narrowed.get("required", []) if k not in keys]
    if not narrowed["required"]:
        del narrowed["required"]
    narrowed["description"] = (narrowed.get("description", "") + " (The chart sets "
                               + ", ".join(keys) + ".)").strip()
    defs[name + "Values"] = narrowed
    node["$ref"] = f"#/$defs/{name}Values"
    return narrowed


def tfgate_config(defs: Schema) -> Schema:
    """Every section of tfgate's config, less the keys the chart owns."""
    root = config.Config.model_json_schema(mode="validation")
    defs.update(root.pop("$defs", {}))
    root.pop("required", None)
    root.pop("title", None)
    for key in CHART_OWNED[""]:
        root["properties"].pop(key)
    sections: dict[str, Schema] = {"": root}
    for path, keys in CHART_OWNED.items():
        if not path:
            continue
        parent, _, key = path.rpartition(".")
        holder = sections[parent]["properties"]
        if key in holder:  # a section this tfgate version lacks is simply absent
            sections[path] = _without(holder[key], keys, defs)
    root["description"] = "tfgate's config (docs/config.md), less the keys the chart sets."
    return root


# -- the chart half -------------------------------------------------------------------


def tls() -> Schema:
    cert_manager = closed({
        "enabled": BOOL,
        "issuerRef": closed({"name": STRING, "kind": STRING, "group": STRING}),
        "dnsNames": STRINGS, "uris": STRINGS, "duration": STRING, "renewBefore": STRING,
        "privateKey": closed({"algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                              "size": COUNT}),
    })
    return closed({"secretName": NAME,
                   "clientCA": closed({"secretName": STRING, "key": NAME}),
                   "certManager": cert_manager}, required=("secretName",))


def modes() -> Schema:
    model_server = closed({
        "image": image(required=True), "modelName": STRING, "modelBasePath": STRING,
        "modelConfigFile": STRING, "extraArgs": STRINGS, "env": K8S_LIST,
        "volumes": K8S_LIST, "volumeMounts": K8S_LIST, "resources": RESOURCES,
        "egress": K8S_LIST})
    standalone = closed({
        "upstream": closed({"address": STRING, "restAddress": STRING, "tls": closed({
            "secretName": STRING, "clientCert": BOOL, "serverName": STRING})}),
        "modelServer": closed({"namespace": STRING, "podSelector": LABELS,
                               "ports": {"type": "array", "items": PORT, "minItems": 1},
                               "restPorts": {"type": "array", "items": PORT, "minItems": 1},
                               "fence": BOOL}),
    })
    task = closed({"name": {"type": "string", "pattern": "^[a-z]([-a-z0-9]{0,18}[a-z0-9])?$"},
                   "replicas": {"type": "integer", "minimum": 1}},
                  required=("name", "replicas"))
    egress = closed({
        "adminPortBase": PORT,
        "resources": RESOURCES,
        "policy": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/Policy"}],
                   "description": "The egresses' policy; null: config.policy."},
        "tfgateConfig": {"type": "object", "description": "Copied verbatim into each "
                         "egress config; tfgate checks it when it starts."},
    })
    cluster = closed({
        "identity": {"type": "string", "pattern": "^(spiffe://.+)?$"},
        "tfPort": PORT,
        "localPortBase": PORT,
        "tasks": {"type": "array", "items": task, "minItems": 1},
        "container": closed({"image": image(), "command": STRINGS, "args": STRINGS,
                             "env": K8S_LIST, "resources": RESOURCES,
                             "volumeMounts": K8S_LIST}),
        "volumes": K8S_LIST,
        "ingressFrom": K8S_LIST,
        "tfgateConfig": {"type": "object", "description": "Copied verbatim into each "
                         "task's ingress config; tfgate checks it when it starts."},
        "egress": egress,
    })
    return {"sidecar": closed({"modelServer": model_server}),
            "standalone": standalone, "cluster": cluster}


def pods() -> Schema:
    """The usual pod and workload knobs."""
    return {
        "replicaCount": COUNT,
        "autoscaling": closed({"enabled": BOOL, "minReplicas": {"type": "integer", "minimum": 1},
                               "maxReplicas": {"type": "integer", "minimum": 1},
                               "targetCPUUtilizationPercentage": {"type": "integer",
                                                                  "minimum": 1}}),
        "podDisruptionBudget": closed({"enabled": BOOL,
                                       "maxUnavailable": {"type": ["integer", "string"]}}),
        "topologySpread": closed({"enabled": BOOL, "maxSkew": {"type": "integer", "minimum": 1}}),
        "topologySpreadConstraints": K8S_LIST,
        "podAnnotations": LABELS, "podLabels": LABELS, "nodeSelector": LABELS,
        "tolerations": K8S_LIST, "affinity": K8S_OBJECT, "priorityClassName": STRING,
        "extraVolumes": K8S_LIST, "extraVolumeMounts": K8S_LIST,
        "imagePullSecrets": {"type": "array", "items": closed({"name": NAME}, ("name",))},
        "serviceAccount": closed({"create": BOOL, "name": STRING, "annotations": LABELS}),
        "service": closed({"type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                           "annotations": LABELS}),
    }


def tfgate_process() -> Schema:
    """How the tfgate container runs: ports, probes, draining, reload, metrics."""
    return {
        "image": image(required=True),
        "fullnameOverride": STRING,
        "port": PORT,
        "tls": tls(),
        "jwks": closed({"secretName": STRING}),
        "extraSecretMounts": {"type": "array", "items": closed(
            {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$"},
             "secretName": NAME}, ("name", "secretName"))},
        "admin": closed({"enabled": BOOL, "port": PORT}),
        "rest": closed({"enabled": BOOL, "port": PORT,
                        "upstream": {"enum": ["translate", "native"]}}),
        "probes": closed({"startup": probe(), "readiness": probe(), "liveness": probe()}),
        "lifecycle": closed({"preStopSleepSeconds": COUNT, "terminationMarginSeconds": COUNT}),
        "reload": {"enum": ["roll", "file"]},
        "workers": {"type": ["integer", "null"], "minimum": 1},
        "extraArgs": STRINGS, "extraEnv": K8S_LIST, "resources": RESOURCES,
        "metrics": closed({"podAnnotations": BOOL, "serviceMonitor": closed(
            {"enabled": BOOL, "interval": STRING, "labels": LABELS})}),
        "networkPolicy": closed({
            "enabled": BOOL, "ingressFrom": K8S_LIST, "metricsFrom": K8S_LIST,
            "dns": closed({"namespaceSelector": K8S_OBJECT, "podSelector": K8S_OBJECT}),
            "extraEgress": K8S_LIST}),
    }


def schema() -> Schema:
    defs: Schema = {}
    properties = {"mode": {"enum": ["sidecar", "standalone", "cluster"]},
                  **tfgate_process(), "config": tfgate_config(defs), **modes(), **pods()}
    return {"$schema": "http://json-schema.org/draft-07/schema#",
            **closed(properties, required=("mode", "config", "tls")), "$defs": defs}


def render() -> str:
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(OUT)
