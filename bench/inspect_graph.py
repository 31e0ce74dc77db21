"""Time and memory of inspecting one large CreateSession (docs/wire-facts.md).

`python -m bench.inspect_graph N` builds a GraphDef of N nodes (two inputs, two attrs
each, the shape of a real layer stack), then times the wire field count and the full
inspector (count, parse, unknown-field check, walk) and reports the peak RSS.
`--worst MIB` instead parses MIB mebibytes of empty NodeDefs, the costliest bytes for
upb, without any count.
"""

from __future__ import annotations

import argparse
import resource
import time

from proxy.inspect.distributed import METHODS
from proxy.inspect.wire import check_field_count
from proxy.pb import distributed_graph_pb2, distributed_master_pb2

CREATE_SESSION = "/tensorflow.MasterService/CreateSession"


def _field1(payload: bytes) -> bytes:
    """`payload` as field 1 (graph_def) of a CreateSessionRequest."""
    length, size = bytearray(), len(payload)
    while True:
        length.append((size & 0x7F) | (0x80 if size > 0x7F else 0))
        size >>= 7
        if not size:
            return b"\x0a" + bytes(length) + payload


def _graph(nodes: int) -> bytes:
    graph = distributed_graph_pb2.GraphDef()
    for i in range(nodes):
        node = graph.node.add(name=f"layer_{i}/MatMul", op="MatMul" if i % 3 else "AddV2")
        node.input.extend([f"layer_{i - 1}/MatMul", f"w_{i}"])
        node.attr["T"].type = 1
        node.attr["transpose_a"].b = False
    return _field1(graph.SerializeToString())


def _rss_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("nodes", type=int, nargs="?", default=100_000)
    parser.add_argument("--worst", type=int, metavar="MIB")
    args = parser.parse_args()
    if args.worst:
        data = _field1(b"\x0a\x00" * (args.worst * 2**20 // 2))
        start = time.perf_counter()
        msg = distributed_master_pb2.CreateSessionRequest.FromString(data)
        print(f"{args.worst} MiB of empty nodes: {len(msg.graph_def.node)} messages, parse "
              f"{time.perf_counter() - start:.2f}s, peak RSS {_rss_mb()} MB")
        return
    data = _graph(args.nodes)
    start = time.perf_counter()
    check_field_count(data, distributed_master_pb2.CreateSessionRequest.DESCRIPTOR, 10**9)
    counted = time.perf_counter()
    METHODS[CREATE_SESSION][1](data)
    done = time.perf_counter()
    print(f"{args.nodes} nodes, {len(data)} bytes: field count {counted - start:.2f}s, "
          f"inspector {done - counted:.2f}s, peak RSS {_rss_mb()} MB")


if __name__ == "__main__":
    main()
