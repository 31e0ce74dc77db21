"""The REST front: ModelServer's HTTP/JSON API (`/v1/models/...`, usually port 8501).

Each module is one stage, and none of them decides anything about the caller: they turn an
HTTP request into the inputs of tfgate's admission path (principal inputs, the gRPC method
path it stands for, `Facts`) and an upstream answer back into what a REST client expects.

- `paths.py`: method + request target -> `Route` (gRPC method path, `ModelTarget` without
  its signature, the canonical path to forward), exactly as ModelServer parses them.
- `body.py`: the body under caps (on the wire, after gzip/deflate) and strict JSON
  (duplicate keys, invalid UTF-8, overflowing numbers refused; NaN/Infinity as ModelServer).
- `facts.py`: JSON -> `PredictBody` / `ExamplesBody` and `Facts` that `limits.check_sizes`
  judges with the same caps as gRPC.
- `canonical.py`: the exact JSON bytes forwarded to a REST upstream, made from what was judged.
- `translate.py`: the same bodies as PredictRequest / ClassificationRequest / RegressionRequest
  bytes, and gRPC responses back as ModelServer's JSON.
- `signatures.py`: input dtypes from GetModelMetadata, which translation needs (bounded cache).
- `errors.py`: one table from gRPC status to HTTP status, and the `{"error": ...}` body.
- `server.py`: an HTTPS + mTLS listener (aiohttp) that runs all of the above around an
  `admit` callable, forwarding natively (REST upstream) or translated (gRPC upstream).

docs/wire-facts.md ("REST API") lists the ModelServer behaviour these modules rely on.
"""
