"""The REST front: ModelServer's HTTP/JSON API (`/v1/models/...`, usually port 8501).

A front of tfgate beside the gRPC one (docs/rest.md): the same admission path, limits,
counters and audit. The stages turn an HTTP request into admission's inputs (a `Request`
for the gRPC method the path stands for, then `Facts`) and an upstream's answer back into
what a REST client expects; none of them decides anything about the caller.

- `server.py`: the listener (aiohttp, HTTP/1.1, TLS set up per connection so that a
  connection over the cap is refused before its handshake) and its bounds.
- `handler.py`: one call, from headers to response: `admission.start` before the body is
  read, the body under its bounds, `admission.judge` / `admission.admit`, the upstream.
- `paths.py`: method + request target -> `Route` (gRPC method path, `ModelTarget` without
  its signature, the canonical path to forward), exactly as ModelServer parses them.
- `judge.py`: the inspect stage: inflate, bound, parse and read a body into `Facts`.
- `body.py`: the body under caps (on the wire, after gzip/deflate) and strict JSON
  (duplicate keys, invalid UTF-8, overflowing numbers refused; NaN/Infinity as ModelServer).
- `jsonbounds.py`: depth, string and number bounds, checked on the bytes before parsing.
- `facts.py`, `examples.py`, `jsonvalues.py`: JSON -> `PredictBody` / `ExamplesBody` and
  the `Facts` that `limits.check` judges with the same caps as gRPC.
- `pool.py`: where large bodies are parsed (a few threads, a cap on what waits).
- `upstream.py`: native (`canonical.py`: the JSON of what was judged, to a REST port) or
  translated (`translate_in.py` / `translate_out.py`: gRPC on the front's own channel;
  `signatures.py`: input dtypes from GetModelMetadata, cached).
- `visible.py`: metadata and status answers filtered to what the caller may see, as the
  gRPC front filters them.
- `errors.py`: ModelServer's `{"error": ...}` body and the HTTP-only refusals.

docs/wire-facts.md ("REST API") lists the ModelServer behaviour these modules rely on.
"""
