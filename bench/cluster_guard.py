"""The cluster guard's own cost per StreamingEnqueue message, without any transport.

    python -m bench.cluster_guard [--messages 20000] [--runs 3]

Runs the bench's EnqueueRequest (bench/messages.py) through `admission.inspect` and
`admission.answered` for a caller owning its context, with an op allowlist, the way the
gRPC front does for each message; and the inspector alone, for comparison.
"""

from __future__ import annotations

import argparse
import time

from bench import messages
from proxy import admission
from proxy.call import Call, Principal
from proxy.cluster_guard import Exchange
from proxy.config import validate_config
from proxy.state import build_state

CALLER = "spiffe://bench.tfgate/client"
EAGER = "/tensorflow.eager.EagerService/"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_guard")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    state = build_state(validate_config({
        "listen": {"address": "127.0.0.1:0", "plaintext": True, "local_identity": CALLER},
        "upstreams": {"w": {"address": "127.0.0.1:1", "kind": "cluster"}},
        "policy": {"rules": [{"principals": {"spiffe": [CALLER]},
                              "methods": ["CreateContext", "StreamingEnqueue"],
                              "ops": {"allow": ["Const", "Mul", "AddV2", "Identity"]}}]}}),
        connect=False)
    call = Call(EAGER + "StreamingEnqueue", "bench")
    call.principal = Principal(spiffe_id=CALLER, has_certificate=True)
    exchange = Exchange()
    admission.inspect(state, call, state.methods.lookup(EAGER + "CreateContext"),
                      messages.create_context(), exchange)
    admission.answered(state, exchange, b"")
    stream, message, answer = state.methods.lookup(EAGER + "StreamingEnqueue"), \
        messages.stream_message(), b"\x0a\x00"
    for _ in range(args.runs):
        t0 = time.perf_counter()
        for _ in range(args.messages):
            admission.inspect(state, call, stream, message, exchange)
            admission.answered(state, exchange, answer)
        guard = (time.perf_counter() - t0) / args.messages * 1e6
        t0 = time.perf_counter()
        for _ in range(args.messages):
            stream.inspect(message)
        alone = (time.perf_counter() - t0) / args.messages * 1e6
        print(f"per message: guard {guard:.1f} µs (inspect, ownership, policy, answer); "
              f"inspector alone {alone:.1f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
