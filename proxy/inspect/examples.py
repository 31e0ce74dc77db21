"""Classify/Regress/MultiInference `Input`: what the server will build from the examples.

ModelServer turns `Input` into one DT_STRING tensor of shape [examples], one serialized
tf.Example per element, and with `example_list_with_context` it prepends the serialized
context to *every* example (docs/wire-facts.md §1.3). So the server allocates about
24 × examples + Σ len(example) + examples × len(context) bytes: a 1 MiB context with
10,000 empty examples is 10 GiB from a 1 MiB request. `ExampleFacts` carries what
`limits.py` needs to refuse that:

- examples: how many; an empty input is refused here, as the server does ("Input is empty").
- max_features: the most features one example can have once the context is prepended
  (its own features + the context's).
- max_value_bytes: the largest single feature as serialized (its name and its value list:
  bytes_list elements, 4 bytes per float, 1-10 bytes per int64), in any example or the
  context. Numeric lists are counted as sent, which is what the server copies around.
- context_bytes, decoded_bytes (as above).

Sizes are judged as the server may pay them, so each is the larger of two readings. The
lists are `[lazy = true]` in input.proto and the server reads them back as raw bytes
(`SerializedInput`: `repeated bytes examples`, `bytes context`), so where the runtime
keeps them lazy it copies the context as it came on the wire; an eagerly parsed `Input`
instead holds the context with duplicate map entries merged (last wins). A context of
1024 entries of one 1 KiB feature is 1 MiB on the wire and 1 KiB parsed, and the raw
1 MiB may be copied into every example. So context_bytes = max(every context byte on the
wire, the parsed context's size), and the example bytes likewise. The wire reading comes
from the request bytes, parsed once more in C with a schema of `bytes` fields (`_Wire*`):
list occurrences concatenate, as a lazy field merges, and every occurrence of `context`
counts, so a split or repeated context is never cheaper than the bytes sent
(docs/wire-facts.md).

Cost: the work is done in C where it can be (sizes, feature lengths via a "merged" parse
that folds every example's features into one list); only the per-example feature count
is a Python loop, and it runs after the example count is checked against a hard ceiling.
Unknown fields are refused in `Input` and the example lists; inside a tf.Example they are
left alone (the model's parser ignores them) but their bytes count in every size.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf import message as _message

from proxy.call import ExampleFacts
from proxy.errors import Reason, Reject, malformed
from proxy.inspect.wire import reject_unknown_fields
from proxy.pb.example_pb2 import Example, Input

TSTRING_BYTES = 24
# Above this many examples the input is refused before any per-example work. It is also
# the largest value `limits.examples.max_examples` may take.
MAX_EXAMPLES = 1_000_000


def _schemas() -> tuple[type[_message.Message], type[_message.Message], type[_message.Message]]:
    """Message classes that read the example lists differently from input.proto:

    - `Merged{Ex examples = 1; Ex context = 2}`, `Ex{Feats features = 1}`,
      `Feats{repeated bytes feature = 1}`: parsing a list with it merges every example (a
      singular field), so all their feature map entries land in one list, raw.
    - `WireRequest{WireInput input = 2}` (Classify, Regress and MultiInference all carry
      `input = 2`), `WireInput{repeated bytes example_list = 1; repeated bytes
      example_list_with_context = 2}`, `WireList{repeated bytes examples = 1; repeated bytes
      context = 2}`: the lists and their parts exactly as sent, one element per occurrence.
    """
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="tfgate_examples_views.proto",
                                              package="tfgate.views", syntax="proto3")

    def message(name: str, *fields: tuple[str, int, str | None]) -> None:
        msg = file.message_type.add(name=name)
        for field, number, type_name in fields:
            if type_name is None:
                msg.field.add(name=field, number=number, type=f.TYPE_BYTES,
                              label=f.LABEL_REPEATED)
            else:
                msg.field.add(name=field, number=number, type=f.TYPE_MESSAGE,
                              label=f.LABEL_OPTIONAL, type_name=f".tfgate.views.{type_name}")

    message("Feats", ("feature", 1, None))
    message("Ex", ("features", 1, "Feats"))
    message("Merged", ("examples", 1, "Ex"), ("context", 2, "Ex"))
    message("WireList", ("examples", 1, None), ("context", 2, None))
    message("WireInput", ("example_list", 1, None), ("example_list_with_context", 2, None))
    message("WireRequest", ("input", 2, "WireInput"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return tuple(message_factory.GetMessageClass(pool.FindMessageTypeByName(
        f"tfgate.views.{name}")) for name in ("Merged", "WireRequest", "WireList"))


_Merged, _WireRequest, _WireList = _schemas()


def _views(request: bytes, kind: str) -> tuple[_message.Message, _message.Message]:
    """The `kind` list of the request's `input` as the server's lazy field holds it (every
    occurrence on the wire, concatenated, which for protobuf is merging them), read as a
    `WireList` and as a `Merged`."""
    try:
        raw = b"".join(getattr(_WireRequest.FromString(request).input, kind))
        return _WireList.FromString(raw), _Merged.FromString(raw)
    except _message.DecodeError:  # the real parse accepted it; these laxer views cannot fail
        raise malformed("request is not valid protobuf") from None


def inspect_input(value: Input | None, request: bytes) -> ExampleFacts:
    """Facts about `value`, the parsed `input` of `request` (the bytes as received)."""
    if value is None:
        raise malformed("input is empty")
    reject_unknown_fields(value, "input")
    kind = value.WhichOneof("kind")
    if kind is None:
        raise malformed("input is empty")
    examples_list = getattr(value, kind)
    reject_unknown_fields(examples_list, f"input.{kind}")
    examples = examples_list.examples
    count = len(examples)
    if count == 0:
        raise malformed("input is empty")
    if count > MAX_EXAMPLES:
        raise Reject(Reason.LIMIT_EXCEEDED,
                     f"input: {count} examples > max {MAX_EXAMPLES} (hard limit)")
    sent, merged = _views(request, kind)
    context_bytes = context_features = 0
    if kind == "example_list_with_context":
        context_bytes = max(examples_list.context.ByteSize(), sum(map(len, sent.context)))
        context_features = len(examples_list.context.features.feature)
    example_bytes = max(sum(map(Example.ByteSize, examples)), sum(map(len, sent.examples)))
    most_features = max(len(ex.features.feature) for ex in examples)
    max_value = max(map(len, merged.examples.features.feature), default=0)
    max_value = max(max_value, max(map(len, merged.context.features.feature), default=0))
    return ExampleFacts(
        examples=count,
        max_features=most_features + context_features,
        max_value_bytes=max_value,
        context_bytes=context_bytes,
        decoded_bytes=count * (TSTRING_BYTES + context_bytes) + example_bytes,
    )
