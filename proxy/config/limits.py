"""`limits:` input sizes, rates, concurrency and deadlines (limit stage).

Every default is chosen so that an unconfigured tfgate keeps a production ModelServer safe:
no request can make it allocate more than about 64 MiB per call for its inputs, whatever
the request says its shape is. docs/limits.md explains each choice; `limits.py` enforces.
"""

from __future__ import annotations

import pydantic
from pydantic import Field

from proxy.config.base import GRPC_MAX_MESSAGE as _GRPC_MAX
from proxy.config.base import MiB, Section
from proxy.dtypes import BY_NAME, DEFAULT_ALLOWED, NEVER_ALLOWED
from proxy.inspect.examples import MAX_EXAMPLES


class TensorLimits(Section):
    """Predict inputs, sized from shape × dtype as ModelServer will allocate them
    (a short value list is repeated to fill the shape), never from the bytes sent."""

    max_dims: int = Field(
        8, ge=0, le=254, description="Most dimensions (rank) of one input. 8 covers "
        "batch + video (5-D) with room to spare; TF allows 254, and no model needs that.")
    max_elements: int = Field(
        16 * MiB, ge=0, le=2**63 - 1, description="Most elements in one input tensor "
        "(product of its dims). 16777216 = 64 MiB of float32.")
    max_tensor_bytes: int = Field(
        64 * MiB, ge=0, le=_GRPC_MAX, description="Most bytes one input decodes to: "
        "elements × item size, or for DT_STRING 24 × elements plus every element's length.")
    max_request_bytes: int = Field(
        64 * MiB, ge=0, le=_GRPC_MAX, description="Most bytes all inputs of one request "
        "decode to together. With listen.max_message_bytes this bounds what one call costs "
        "the server; 64 MiB is far below ModelServer's 2 GiB ceiling.")
    max_batch: int | None = Field(
        None, ge=1, description="Largest first (batch) dimension of any input of rank >= 1. "
        "Null (default): max_elements already bounds memory; set it per model to the "
        "model's batching max_batch_size to refuse oversized batches before they queue.")
    max_string_element_bytes: int = Field(
        1 * MiB, ge=0, le=_GRPC_MAX, description="Longest single DT_STRING element. Raise it "
        "for models that take encoded images or documents as strings.")
    max_string_tensor_bytes: int = Field(
        32 * MiB, ge=0, le=_GRPC_MAX, description="Most string bytes in one DT_STRING input, "
        "after fill (a 1 MiB string_val with shape [1000] is 1000 MiB). Half of "
        "max_tensor_bytes because strings also cost one heap allocation per element.")
    allow_empty: bool = Field(
        False, description="Accept inputs with a 0 dimension (no elements). Off: no real "
        "request needs them, and empty tensors have crashed kernels (CVE-2021-41209).")
    allowed_dtypes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ALLOWED), description="Input dtypes accepted, "
        "by name (DT_FLOAT, ...). Quantized, float8, int4/int2 and float4 are off unless "
        "listed; DT_INVALID, DT_RESOURCE, DT_VARIANT and *_REF can never be listed.")

    @pydantic.field_validator("allowed_dtypes")
    @classmethod
    def _known_dtypes(cls, value: list[str]) -> list[str]:
        for name in value:
            if name in NEVER_ALLOWED.values() or name.endswith("_REF"):
                raise ValueError(f"{name} can never be allowed")
            if name not in BY_NAME:
                raise ValueError(f"unknown dtype {name!r}; use names like DT_FLOAT")
        return value


class ExampleLimits(Section):
    """Classify, Regress and MultiInference inputs (tf.Example lists)."""

    max_examples: int = Field(
        10_000, ge=1, le=MAX_EXAMPLES, description="Most examples in one request (the "
        f"batch). Requests with more than {MAX_EXAMPLES} are refused before inspection.")
    max_features: int = Field(
        1024, ge=0, description="Most features in one example, counting the context's.")
    max_value_bytes: int = Field(
        1 * MiB, ge=0, le=_GRPC_MAX, description="Largest single feature as serialized "
        "(name and value list), in any example or the context.")
    max_context_copy_bytes: int = Field(
        64 * MiB, ge=0, le=_GRPC_MAX, description="Most of examples × context size: the "
        "server copies the serialized context into every example, so a 1 MiB context "
        "with 10000 empty examples costs 10 GiB.")
    max_decoded_bytes: int = Field(
        64 * MiB, ge=0, le=_GRPC_MAX, description="Most bytes of the string tensor the "
        "server builds: 24 × examples + all examples + examples × context.")


class RateLimit(Section):
    """A token bucket per principal: `burst` calls at once, refilled at `rate` per second."""

    rate: float = Field(gt=0, description="Sustained calls per second per principal.")
    burst: int = Field(ge=1, description="Calls a principal may make at once after being idle.")


class Concurrency(Section):
    """Calls in flight. Excess calls fail at once with RESOURCE_EXHAUSTED; none wait."""

    per_principal: int | None = Field(
        32, ge=1, description="Most calls one principal may have in flight, counted from "
        "its headers on (a call waiting for its body counts). Null: no cap.")
    total: int | None = Field(
        None, ge=1, description="Most calls in flight through tfgate, audited when refused. "
        "Null: only listen.max_calls (per process, refused as overloaded).")


class Deadline(Section):
    """Deadlines of TF Serving calls (all unary). Distributed-TF calls keep the client's
    deadline (TF sends none): they last as long as the computation they serve and are
    bounded by `concurrency`."""

    max_s: float = Field(
        60.0, gt=0, description="Client deadlines above this are lowered to it, so a "
        "stuck call frees its concurrency slot and its upstream call.")
    default_s: float = Field(
        30.0, gt=0, description="Deadline given to calls that come without one.")

    @pydantic.model_validator(mode="after")
    def _default_within_max(self) -> Deadline:
        if self.default_s > self.max_s:
            raise ValueError("default_s must not exceed max_s")
        return self


class ModelLimits(Section):
    """Overrides for some models (and signatures). The first entry whose `models` and
    `signatures` match a request's model applies; keys it gives replace the global ones,
    keys it omits keep them. For MultiInference every task's entry must pass."""

    models: list[str] = Field(min_length=1, description="Model name globs (docs/identity.md).")
    signatures: list[str] = Field(
        default_factory=lambda: ["*"], description="Signature name globs (`*`: any; "
        "methods without a signature match only `*`).")
    tensors: TensorLimits | None = Field(None, description="Tensor limits to override.")
    examples: ExampleLimits | None = Field(None, description="Example limits to override.")
    rate: RateLimit | None = Field(
        None, description="A separate bucket per principal for these models, checked in "
        "addition to the global `rate`.")

    @pydantic.model_validator(mode="after")
    def _something(self) -> ModelLimits:
        if self.tensors is None and self.examples is None and self.rate is None:
            raise ValueError("give at least one of tensors, examples, rate")
        return self


class Limits(Section):
    """Input size limits, rate and concurrency limits, deadlines. Size refusals are
    RESOURCE_EXHAUSTED, a dtype not allowed is INVALID_ARGUMENT; all are audited."""

    tensors: TensorLimits = Field(default_factory=TensorLimits, description="Predict inputs.")
    examples: ExampleLimits = Field(default_factory=ExampleLimits,
                                    description="Classify/Regress/MultiInference inputs.")
    rate: RateLimit | None = Field(
        None, description="Calls per principal per second. Off by default: call cost varies "
        "too much for one rate to protect the server (concurrency does that); set it as a "
        "fairness or quota policy.")
    concurrency: Concurrency = Field(default_factory=Concurrency,
                                     description="Calls in flight.")
    deadline: Deadline = Field(default_factory=Deadline, description="Call deadlines.")
    models: list[ModelLimits] = Field(
        default_factory=list, description="Per-model overrides, first match wins.")
    table_size: int = Field(
        65536, ge=16, le=2**22, description="With `serve --workers N`: how many callers "
        "the workers' shared limit table tracks at once (a caller with calls in flight, "
        "and each of its rate buckets not yet refilled, takes one entry each); size it to "
        "about 4× the callers busy at once (docs/limits.md). Fixed at start (a reload "
        "does not resize it); when full, a new caller is refused with RESOURCE_EXHAUSTED "
        "until entries free up. About 40 + 4 × N bytes per entry. Unused by a single "
        "process, whose tables grow and shrink with use.")
