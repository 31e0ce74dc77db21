"""TensorProto inspection (placeholder until the limits stage lands)."""

from __future__ import annotations

from collections.abc import Mapping

from proxy.call import TensorFacts


def inspect_inputs(inputs: Mapping) -> tuple[TensorFacts, ...]:
    return ()
