"""Route a REST request: HTTP method + request target -> the gRPC method it stands for.

ModelServer matches the request target (path *and* query, as sent) with two RE2 patterns,
case-insensitively, then percent-decodes the model name and label (docs/wire-facts.md,
"REST API"). The same patterns run here with the same flags, so tfgate and the server agree
on which model, version or label a path names. What is forwarded is not the client's path
but `Route.upstream_path()`: the decoded name and label percent-encoded again, the version
in plain decimal and the verb in lower case, so the server parses exactly what was judged.

Everything else is refused before the body is read: a target that is not printable ASCII
or does not match is 404; a method other than GET and POST is 405; a version that does not
fit int64, a name that is not UTF-8 or holds control characters, or a GET without a model
name is 400, as ModelServer says for the same input. A name or label `.` or `..` is 400
too: forwarded, it would be a dot segment, which URL libraries and path-normalizing
proxies remove, so `/labels/./metadata` would reach the server as the status path
`/labels/metadata` (docs/wire-facts.md §6); so is one holding such a segment between
`/` or `\\` (`a%2F..%2Fsecret`, for proxies that also decode escaped slashes).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from proxy.call import ModelTarget
from proxy.errors import Reason, malformed
from proxy.rest.errors import RestReject, not_found

PREDICTION = "/tensorflow.serving.PredictionService/"
METHOD_PATHS = {
    "predict": PREDICTION + "Predict",
    "classify": PREDICTION + "Classify",
    "regress": PREDICTION + "Regress",
    "metadata": PREDICTION + "GetModelMetadata",
    "status": "/tensorflow.serving.ModelService/GetModelStatus",
}
MAX_TARGET_CHARS = 4096   # a request target longer than this is refused (414 before that)
INT64_MAX = 2**63 - 1

_FLAGS = re.IGNORECASE | re.ASCII  # RE2's (?i) and its ASCII-only \d
_VERSION = r"(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
_POST = re.compile(r"/v1/models/([^/:]+)" + _VERSION + r":(classify|regress|predict)", _FLAGS)
_GET = re.compile(r"/v1/models(?:/([^/:]+))?" + _VERSION + r"(?:/(metadata))?", _FLAGS)
_PRINTABLE = re.compile(r"[!-~]+", re.ASCII)
_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SEPARATORS = re.compile(r"[/\\]")


@dataclass(frozen=True, slots=True)
class Route:
    """What a REST request addresses. `target.signature` is None here: for predict,
    classify and regress it comes from the body (`facts.py`)."""

    verb: str         # predict | classify | regress | status | metadata
    method_path: str  # the gRPC method the call is judged as
    target: ModelTarget

    @property
    def has_body(self) -> bool:
        return self.verb in ("predict", "classify", "regress")

    def upstream_path(self) -> str:
        """The canonical path forwarded to a REST upstream."""
        t = self.target
        path = "/v1/models/" + urllib.parse.quote(t.name, safe="")
        if t.version is not None:
            path += f"/versions/{t.version}"
        elif t.label is not None:
            path += "/labels/" + urllib.parse.quote(t.label, safe="")
        if self.has_body:
            return f"{path}:{self.verb}"
        return path + "/metadata" if self.verb == "metadata" else path


def route(http_method: str, target: str) -> Route:
    """Parse `target` (the request line's path and query, undecoded) for `http_method`."""
    if http_method not in ("GET", "POST"):
        raise RestReject(405, Reason.UNKNOWN_METHOD,
                         f"method {http_method[:16]} is not served; use GET or POST")
    if len(target) > MAX_TARGET_CHARS or not _PRINTABLE.fullmatch(target):
        raise not_found("no such REST path (the path must be printable ASCII)")
    pattern = _POST if http_method == "POST" else _GET
    match = pattern.fullmatch(target)
    if match is None:
        raise not_found(f"no REST API path matches {http_method} {_shown(target)}")
    raw_name, raw_version, raw_label, suffix = match.groups()
    if http_method == "POST":
        if suffix not in METHOD_PATHS:  # ModelServer compares the verb case-sensitively
            raise not_found(f"no REST API path matches {http_method} {_shown(target)}")
        verb = suffix
    else:  # only a lower-case "metadata" is metadata; "/METADATA" is a status request
        verb = "metadata" if suffix == "metadata" else "status"
        if raw_name is None:
            raise malformed("Missing model name in request.")
    version = _version(raw_version) if raw_version is not None else None
    label = _decoded(raw_label, "model version label") if raw_label is not None else None
    name = _decoded(raw_name, "model name")
    return Route(verb, METHOD_PATHS[verb], ModelTarget(name=name, version=version, label=label))


def _version(text: str) -> int:
    value = int(text)
    if value > INT64_MAX:
        raise malformed(f"Failed to convert version: {_shown(text)} to numeric.")
    return value


def _decoded(raw: str, what: str) -> str:
    """Percent-decoding as curl_easy_unescape does it (%XX only, '+' stays), then UTF-8."""
    data = _PERCENT.sub(lambda m: bytes([int(m.group(1), 16)]), raw.encode("ascii"))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise malformed(f"{what} is not UTF-8 once percent-decoded") from None
    if _CONTROL.search(text):
        raise malformed(f"{what} holds control characters once percent-decoded")
    # Forwarded, `.` or `..` is a dot segment, which URL code and proxies remove; so is
    # one between `%2F`s for a proxy that also decodes escaped slashes.
    if any(part in (".", "..") for part in _SEPARATORS.split(text)):
        raise malformed(f"{what} is or holds a dot segment ('.' or '..') once "
                        "percent-decoded")
    return text


def _shown(text: str) -> str:
    return text if len(text) <= 96 else text[:96] + "..."
