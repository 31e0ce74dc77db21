"""REST front: which JSON parser, and what one body costs (parse + facts + canonical).

    python -m bench.rest_json

Parsers on a small predict body (~70 B) and ~1 MiB predict / classify bodies, CPU per
call (time.process_time): stdlib json with and without a duplicate-key hook,
python-rapidjson with and without a pairs hook, orjson with and without a key-counting
pre-scan (the only way it can see duplicates). Then tfgate's whole path for the same
bodies, and the Python memory the parsed 1 MiB predict body holds (tracemalloc peak).
The optional parsers are skipped when they are not installed.
"""

from __future__ import annotations

import json
import random
import re
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from proxy.rest import body, canonical, examples, facts
from proxy.rest.paths import route

random.seed(1)
SMALL = json.dumps({"signature_name": "serving_default", "instances": [1.0, 2.0, 5.0]}).encode()
PREDICT = json.dumps({"instances": [[round(random.uniform(-100, 100), 6) for _ in range(100)]
                                    for _ in range(1000)]}).encode()
CLASSIFY = json.dumps({"examples": [{"x": round(random.uniform(-10, 10), 4), "name": f"abc{i}",
                                     "ids": [i, i + 1, i + 2]} for i in range(16000)]}).encode()
KEY = re.compile(r'"(?:[^"\\]|\\.)*"(\s*:)?')


class Dup(ValueError):
    pass


def _pairs(pairs: list) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise Dup()
    return d


def _keys(value: Any) -> int:
    n, stack = 0, [value]
    while stack:
        x = stack.pop()
        if type(x) is dict:
            n += len(x)
            stack.extend(x.values())
        elif type(x) is list:
            stack.extend(y for y in x if type(y) in (dict, list))
    return n


def parsers() -> dict[str, Callable[[bytes], Any]]:
    found: dict[str, Callable[[bytes], Any]] = {
        "json": lambda b: json.loads(b.decode()),
        "json + object_pairs_hook": lambda b: json.loads(b.decode(), object_pairs_hook=_pairs),
        "tfgate body.parse_json": body.parse_json,
    }
    try:
        import rapidjson

        class Pairs(rapidjson.Decoder):
            def start_object(self) -> list:
                return []

            def end_object(self, pairs: list) -> dict:
                return _pairs(pairs)

        plain, paired = rapidjson.Decoder(number_mode=rapidjson.NM_NAN), Pairs(
            number_mode=rapidjson.NM_NAN)
        found["python-rapidjson"] = lambda b: plain(b.decode())
        found["python-rapidjson + pairs"] = lambda b: paired(b.decode())
    except ImportError:
        pass
    try:
        import orjson

        def scanned(b: bytes) -> Any:
            value = orjson.loads(b)
            if sum(1 for m in KEY.finditer(b.decode()) if m.group(1)) != _keys(value):
                raise Dup()
            return value

        found["orjson"] = orjson.loads
        found["orjson + key pre-scan"] = scanned
    except ImportError:
        pass
    return found


def cpu_us(f: Callable[[], Any], n: int) -> float:
    f()
    start = time.process_time()
    for _ in range(n):
        f()
    return (time.process_time() - start) / n * 1e6


def whole_predict(data: bytes) -> bytes:
    parsed = facts.predict_body(body.parse_json(data))
    facts.predict_facts(TARGET, parsed)
    return canonical.predict_json(parsed)


def whole_classify(data: bytes) -> bytes:
    parsed = examples.examples_body(body.parse_json(data))
    examples.examples_facts(TARGET, parsed)
    return canonical.examples_json(parsed)


TARGET = route("POST", "/v1/models/m:predict").target


def main() -> None:
    print(f"bodies: small {len(SMALL)} B, predict {len(PREDICT)} B, classify {len(CLASSIFY)} B")
    for name, f in parsers().items():
        print(f"{name:28s} small {cpu_us(lambda f=f: f(SMALL), 20000):7.1f} us   "
              f"predict {cpu_us(lambda f=f: f(PREDICT), 20) / 1e3:6.1f} ms   "
              f"classify {cpu_us(lambda f=f: f(CLASSIFY), 10) / 1e3:6.1f} ms")
    print(f"{'tfgate parse+facts+canonical':28s} "
          f"small {cpu_us(lambda: whole_predict(SMALL), 20000):7.1f} us   "
          f"predict {cpu_us(lambda: whole_predict(PREDICT), 20) / 1e3:6.1f} ms   "
          f"classify {cpu_us(lambda: whole_classify(CLASSIFY), 10) / 1e3:6.1f} ms")
    tracemalloc.start()
    doc = body.parse_json(PREDICT)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"parsed predict body holds {peak / len(PREDICT):.1f}x its size in Python memory "
          f"(peak {peak >> 20} MiB for {len(PREDICT) >> 10} KiB)")
    del doc


if __name__ == "__main__":
    main()
