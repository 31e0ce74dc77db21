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

Cost: the work is done in C where it can be (sizes, feature lengths via a "merged" parse
that folds every example's features into one list); only the per-example feature count
is a Python loop, and it runs after the example count is checked against a hard ceiling.
Unknown fields are refused in `Input` and the example lists; inside a tf.Example they are
left alone (the model's parser ignores them) but their bytes count in every size.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from proxy.call import ExampleFacts
from proxy.errors import Reason, Reject, malformed
from proxy.inspect.wire import reject_unknown_fields
from proxy.pb.example_pb2 import Example, Input

TSTRING_BYTES = 24
# Above this many examples the input is refused before any per-example work. It is also
# the largest value `limits.examples.max_examples` may take.
MAX_EXAMPLES = 1_000_000


def _merged_schema() -> type[Message]:
    """`Merged{Ex examples = 1; Ex context = 2}`, `Ex{Feats features = 1}`,
    `Feats{repeated bytes feature = 1}`: parsing an ExampleList with it merges every
    example (a singular field) so all their feature map entries land in one list, raw."""
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="tfgate_merged_examples.proto",
                                              package="tfgate.merged", syntax="proto3")
    feats = file.message_type.add(name="Feats")
    feats.field.add(name="feature", number=1, type=f.TYPE_BYTES, label=f.LABEL_REPEATED)
    ex = file.message_type.add(name="Ex")
    ex.field.add(name="features", number=1, type=f.TYPE_MESSAGE, label=f.LABEL_OPTIONAL,
                 type_name=".tfgate.merged.Feats")
    merged = file.message_type.add(name="Merged")
    for name, number in (("examples", 1), ("context", 2)):
        merged.field.add(name=name, number=number, type=f.TYPE_MESSAGE,
                         label=f.LABEL_OPTIONAL, type_name=".tfgate.merged.Ex")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tfgate.merged.Merged"))


_Merged = _merged_schema()


def inspect_input(value: Input | None) -> ExampleFacts:
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
    context_bytes = context_features = 0
    if kind == "example_list_with_context" and examples_list.HasField("context"):
        context_bytes = examples_list.context.ByteSize()
        context_features = len(examples_list.context.features.feature)
    example_bytes = sum(map(Example.ByteSize, examples))
    most_features = max(len(ex.features.feature) for ex in examples)
    merged = _Merged.FromString(examples_list.SerializeToString())
    max_value = max(map(len, merged.examples.features.feature), default=0)
    max_value = max(max_value, max(map(len, merged.context.features.feature), default=0))
    return ExampleFacts(
        examples=count,
        max_features=most_features + context_features,
        max_value_bytes=max_value,
        context_bytes=context_bytes,
        decoded_bytes=count * (TSTRING_BYTES + context_bytes) + example_bytes,
    )
