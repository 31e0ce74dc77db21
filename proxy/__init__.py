"""tfgate: an authenticating gRPC reverse proxy for TensorFlow servers.

A call walks one pipeline, a module per stage, in this order:

1. transport (`tls.py`, `server.py`, `rest/`): the listener terminates TLS, by default
   requiring a client certificate that chains to the configured CA (mTLS). `server.py`
   is the gRPC front, `rest/` the REST front (ModelServer's HTTP/JSON API, judged as the
   gRPC method each path stands for); each hands every call to the admission path, then
   to forward, and ends it through `boundary.py`.
2. authenticate (`authn/`): the verified client certificate (SPIFFE ID, DNS SANs, CN)
   and/or a bearer JWT from `authorization` metadata become a `Principal`.
3. route (`routing.py`): the path must be a method of an enabled family (`families/`: TF
   Serving, and the distributed runtime for `kind: cluster` upstreams), else
   UNIMPLEMENTED; the profiler and SessionService are always refused.
4. authorize the method (`policy.py`): a caller no rule lets call it is refused before
   its body is parsed.
5. inspect (`inspect/`): the request bytes become `Facts` (models, versions, signatures,
   tensor sizes), parsed with the server's own merge rules; unparsable: INVALID_ARGUMENT.
6. authorize the facts (`policy.py`): default deny; some rule must grant principal ×
   method × every model × version × signature, or PERMISSION_DENIED. Distributed-TF
   requests: every op, cluster address and debug URL (`cluster_policy.py`), and the
   handles and functions they use must be the caller's own (`cluster_guard.py`,
   `handles.py`).
7. limit (`limits.py`): sizes, then rate (the caller's concurrency slot is taken right
   after stage 4, from the headers, and held until the call ends).
8. forward (`forward.py`, `metadata.py`): the exact bytes received go to the upstream the
   route chose, minus credentials, plus the verified identity; deadline and cancellation
   propagate and the upstream's status and trailers come back unchanged.
9. audit (`audit.py`): one JSON event per call from the `Call` record (`call.py`).

Stages 2–7 are `admission.py`, which knows no transport. `errors.py` maps each reason to
a status in one table. `bounds.py` holds what any client meets before it authenticates
(docs/hostile-networks.md); `responses.py` filters answers that would tell a caller more
than it may see; `shadow.py` decides a second policy beside the enforced one.

Around the pipeline: `state.py` compiles a config into the objects a call uses, and
`runtime.py` holds the current State across reloads; `service.py` runs a process's fronts
on its one event loop (`loop.py`), reloads (`watch.py`) and drains; `health.py`,
`readiness.py`, `admin.py` and `metrics.py` tell operators how it is doing; `oplog.py` is
the operational log (the audit is separate). `workers.py` runs `--workers N` processes,
which share their limit state (`shared_limits.py`) and one port (`ports.py`). `config/`
declares every key; `cli.py` (`cli_parser.py`) is the command line. Development tooling
lives outside, in `tfgate_dev/`.
"""
