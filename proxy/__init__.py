"""tfgate: an authenticating gRPC reverse proxy for TensorFlow Serving.

One call walks one pipeline, one module per stage, in this order:

1. transport (`tls.py`): the listener terminates TLS, by default requiring a client
   certificate that chains to the configured CA (mTLS).
2. authenticate (`authn/`): the client certificate (SPIFFE ID, DNS SANs, CN) and/or a
   bearer JWT from `authorization` metadata become a `Principal`. Bad credentials end
   the call with UNAUTHENTICATED.
3. route (`routing.py`): the method path must be one tfgate knows; anything else is
   refused (UNIMPLEMENTED), and the profiler and SessionService always are
   (PERMISSION_DENIED).
4. inspect (`inspect/`): the request bytes are parsed into `Facts` (models, versions,
   signatures, tensor sizes). Unparsable requests end with INVALID_ARGUMENT.
5. authorize (`policy.py`): default deny; some rule must grant principal × method ×
   model × version × signature, or the call ends with PERMISSION_DENIED.
6. limit (`limits.py`): sizes, rates and concurrency.
7. forward (`forward.py`): the exact bytes received go to the upstream chosen by model
   (`state.py`), minus credentials in metadata; deadline and cancellation propagate and
   the upstream's status and trailers come back unchanged.
8. audit (`audit.py`): one JSON event per call from the `Call` record (`call.py`).

`server.py` holds the pipeline and the one place where a refusal becomes a status;
`state.py` compiles a config into the objects a call uses; `cli.py` is the command line.
"""
