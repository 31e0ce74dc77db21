"""Write helm/tfgate/values.schema.json.

The chart passes `tfgate.authn`, `.identity`, `.policy`, `.audit` and `.logging` to tfgate's
config verbatim, so their schemas are generated from tfgate's own pydantic models (the
one place each key is declared); `helm lint`/`install` then reject bad values early.
Run `python helm/schema.py` after changing proxy/config/; tests/test_helm.py checks
that the committed file is current.
"""

from __future__ import annotations

import json
import pathlib

from proxy import config

OUT = pathlib.Path(__file__).resolve().parent / "tfgate" / "values.schema.json"


def section(model: type, defs: dict) -> dict:
    """A model's schema; its `$defs` move to the document root, where `$ref`s point."""
    found = model.model_json_schema(mode="validation")
    defs.update(found.pop("$defs", {}))
    return found


def schema() -> dict:
    defs: dict = {}
    image = {"type": "object", "properties": {
        "repository": {"type": "string"}, "tag": {"type": "string"},
        "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}}}
    document = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
            "replicaCount": {"type": "integer", "minimum": 0},
            "tfgate": {"type": "object", "properties": {
                "image": image,
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "tlsSecret": {"type": "string", "minLength": 1},
                "jwksSecret": {"type": "string"},
                "authn": section(config.Authn, defs),
                "identity": section(config.Identity, defs),
                "policy": section(config.Policy, defs),
                "audit": section(config.Audit, defs),
                "logging": section(config.Logging, defs),
                "resources": {"type": "object"},
            }, "required": ["tlsSecret", "policy"]},
            "modelServer": {"type": "object", "properties": {
                "image": image,
                "modelName": {"type": "string", "minLength": 1},
                "modelBasePath": {"type": "string", "minLength": 1},
                "extraArgs": {"type": "array", "items": {"type": "string"}},
            }},
        },
    }
    document["$defs"] = defs
    return document


def render() -> str:
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(OUT)
