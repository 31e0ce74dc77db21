"""What a REST caller may see of a GET answer: the gRPC front's response filter
(`proxy/responses.py`), on ModelServer's JSON (docs/wire-facts.md §6).

A metadata answer lists every signature of the model under
`metadata.signature_def.signature_def`; a status answer without a version or label lists
every version under `model_version_status` (each `version` an int64 written as a string).
Only what the caller's grants allow stays (the predicates are the serving family's, so
both fronts hide the same things). The answer is the upstream's bytes when nothing is
hidden, else the filtered document re-serialized. A 2xx answer that is not shaped so is
refused (fail closed: it cannot be shown to hide nothing).

Parsing and writing are pure and may run on the parse threads; `hide`, which asks the
policy, runs on the event loop (the policy's memos are the loop's).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from proxy.call import ModelTarget
from proxy.errors import Reason, Reject
from proxy.families import Grants
from proxy.families.serving import visible_signatures, visible_versions
from proxy.responses import latest_version
from proxy.rest.body import unique_keys

Hide = Callable[[Any], bool]  # drops what is not visible from a parsed answer; True if any


def _unreadable(what: str) -> Reject:
    return Reject(Reason.UPSTREAM_STATUS, "upstream sent an unreadable response",
                  detail=f"upstream REST {what} answer is not shaped as ModelServer's")


def parse(body: bytes) -> Any:
    """The answer as JSON; a key twice in one object is unreadable: when nothing is
    hidden the upstream's bytes go out, and a reader that takes the first copy would
    see one this filter never looked at."""
    try:
        return json.loads(body, object_pairs_hook=unique_keys)
    except ValueError:
        raise _unreadable("GET") from None


def dump(doc: Any) -> bytes:
    return json.dumps(doc, indent=1, ensure_ascii=False).encode("utf-8")


def hider(verb: str, target: ModelTarget, grants: Grants) -> Hide | None:
    """The filter of a `metadata` or `status` answer; None where nothing is filtered."""
    if verb == "metadata":
        signature = visible_signatures(target, grants)
        return lambda doc: _hide_signatures(doc, signature)
    if verb == "status":
        version = visible_versions(target, grants)
        return None if version is None else (lambda doc: _hide_versions(doc, version))
    return None


def _hide_signatures(doc: Any, visible: Callable[[str], bool]) -> bool:
    if not isinstance(doc, dict) or not isinstance(doc.get("metadata", {}), dict):
        raise _unreadable("metadata")
    packed = doc.get("metadata", {}).get("signature_def")
    if packed is None:
        return False  # no signatures listed: nothing to hide
    defs = packed.get("signature_def", {}) if isinstance(packed, dict) else None
    if not isinstance(defs, dict):
        raise _unreadable("metadata")
    hidden = [name for name in defs if not visible(name)]
    for name in hidden:
        del defs[name]
    return bool(hidden)


def _hide_versions(doc: Any, visible: Callable[[int, bool], bool]) -> bool:
    entries = doc.get("model_version_status") if isinstance(doc, dict) else None
    if entries is None and isinstance(doc, dict):
        return False  # no versions listed
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise _unreadable("status")
    versions = [_version_number(e.get("version", 0)) for e in entries]
    if not versions:
        return False
    latest = latest_version([(v, e.get("state") == "AVAILABLE")
                             for v, e in zip(versions, entries, strict=True)])
    kept = [e for e, v in zip(entries, versions, strict=True) if visible(v, v == latest)]
    if len(kept) == len(entries):
        return False
    doc["model_version_status"] = kept
    return True


_DECIMAL = re.compile(r"-?[0-9]+", re.ASCII)


def _version_number(value: Any) -> int:
    """A status entry's version as ModelServer writes it: an int64 in proto3 JSON, so a
    decimal string (or a JSON integer); nothing `int()` would also read (`" 2"`, `"1_0"`,
    `2.7`), which a client could read differently."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        return int(value)
    raise _unreadable("status")
