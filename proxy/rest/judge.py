"""The REST inspect stage: a route and its body bytes as received -> what is judged.

Pure (no sockets, no event loop): it runs on the parse pool's threads (pool.py). Inflate
under the decoded cap (body.py), bound and parse the JSON (jsonbounds.py, body.py), then
read the body as ModelServer would (facts.py for predict, examples.py for classify and
regress) into the `Facts` that admission judges with the gRPC front's own policy and
caps, and the `Judged` body the upstream is sent (re-serialized, never the raw bytes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.call import Facts
from proxy.config import Rest
from proxy.rest import body as bodies
from proxy.rest.examples import examples_body, examples_facts
from proxy.rest.facts import predict_body, predict_facts
from proxy.rest.jsonbounds import JsonBounds
from proxy.rest.paths import Route
from proxy.rest.upstream import Judged


@dataclass(frozen=True, slots=True)
class BodyRules:
    """Caps on one body, from `rest:`."""

    body: bodies.BodyLimits = field(default_factory=bodies.BodyLimits)
    json: JsonBounds = field(default_factory=JsonBounds)

    @classmethod
    def of(cls, rest: Rest) -> BodyRules:
        j = rest.json_bounds
        return cls(bodies.BodyLimits(rest.max_wire_bytes, rest.max_body_bytes),
                   JsonBounds(j.max_depth, j.max_string_bytes, j.max_number_chars))


@dataclass(frozen=True, slots=True)
class Received:
    """A body as it came off the wire, with its Content-Encoding ('' / gzip / deflate)."""

    route: Route
    wire: bytes
    encoding: str
    rules: BodyRules
    off_loop: bool = False  # parsed on a parse thread: make the parse yield the GIL


def no_body(route: Route) -> tuple[Judged, Facts]:
    """GET status / metadata: the path alone names the model."""
    return Judged(route, None), Facts(targets=(route.target,))


def judge(received: Received) -> tuple[Judged, Facts]:
    route, rules = received.route, received.rules
    reader = bodies.BodyReader(received.encoding, None, rules.body)
    reader.feed(received.wire)
    data = reader.finish()
    doc = bodies.parse_json(data, rules.json, interruptible=received.off_loop)
    if route.verb == "predict":
        parsed = predict_body(doc)
        return Judged(route, parsed, len(data)), predict_facts(route.target, parsed)
    examples = examples_body(doc)
    return Judged(route, examples, len(data)), examples_facts(route.target, examples)
