"""Tests for proxy.limits and the `limits:` config (proxy.config.limits), with plain values:
each limit passes at exactly its value and fails one over; rates and concurrency with a
fake clock and no network."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import pytest

from proxy.call import ExampleFacts, Facts, ModelTarget, Principal, TensorFacts
from proxy.config import validate_config
from proxy.config.limits import Limits
from proxy.counters import Counters
from proxy.errors import Code, ConfigError, Reason, Reject
from proxy.limits import Lease, Limiter, LimitState

MiB = 2**20
ALICE = Principal(subject="alice", issuer="iss", has_token=True)
BOB = Principal(subject="bob", issuer="iss", has_token=True)


def limiter(clock: list[float] | None = None, **limits: Any) -> Limiter:
    now = clock if clock is not None else [0.0]
    return Limiter(Limits.model_validate(limits), LimitState(), clock=lambda: now[0])


def target(model: str = "m", signature: str | None = "serving_default") -> ModelTarget:
    return ModelTarget(model, signature=signature)


def tensor(shape: tuple[int, ...] = (4,), dtype: int = 1, itemsize: int = 4,
           name: str = "x", **extra: int) -> TensorFacts:
    elements = 1
    for size in shape:
        elements *= size
    return TensorFacts(name, dtype, shape, elements, extra.pop("decoded_bytes", elements * itemsize),
                       **extra)


def predict(*tensors: TensorFacts, model: str = "m", signature: str = "serving_default") -> Facts:
    return Facts(targets=(target(model, signature),), tensors=tensors)


def refusal(lim: Limiter, facts: Facts) -> Reject:
    with pytest.raises(Reject) as info:
        lim.check(facts)
    return info.value


def _strings(elements: int, each: int) -> TensorFacts:
    return TensorFacts("s", 7, (elements,), elements, 24 * elements + elements * each,
                       max_string_bytes=each, string_bytes=elements * each)


# (limit key, its value in the test config, facts at exactly `value` given a value)
TENSOR_BOUNDARIES = [
    ("max_dims", 3, lambda v: predict(tensor((1,) * v))),
    ("max_elements", 1000, lambda v: predict(tensor((v,)))),
    ("max_batch", 10, lambda v: predict(tensor((v, 2)))),
    ("max_tensor_bytes", 4000, lambda v: predict(tensor((v,), dtype=4, itemsize=1))),
    ("max_request_bytes", 4000, lambda v: predict(tensor((v - 100,), dtype=4, itemsize=1),
                                                  tensor((100,), dtype=4, itemsize=1, name="y"))),
    ("max_string_element_bytes", 50, lambda v: predict(_strings(2, v))),
    ("max_string_tensor_bytes", 60, lambda v: predict(_strings(v // 2, 2))),
]


class TestTensorLimits:
    """Each tensor limit: exactly at it passes, one over fails with a message naming both."""

    @pytest.mark.parametrize("key, value, make", TENSOR_BOUNDARIES,
                             ids=[b[0] for b in TENSOR_BOUNDARIES])
    def test_boundary(self, key: str, value: int, make: Any) -> None:
        """At the limit passes; one over is RESOURCE_EXHAUSTED naming the limit."""
        big = {"max_elements": 10**6, "max_tensor_bytes": 10**6, "max_request_bytes": 10**6,
               "max_string_tensor_bytes": 10**6}
        lim = limiter(tensors={**big, key: value})
        lim.check(make(value))
        reject = refusal(lim, make(value + 1 if key != "max_string_tensor_bytes" else value + 2))
        assert reject.code is Code.RESOURCE_EXHAUSTED
        assert reject.reason is Reason.LIMIT_EXCEEDED
        assert reject.message.endswith(f"> max {value} ({key})")
        assert lim.state.hits.snapshot() == {key: 1}

    def test_message(self) -> None:
        """The issue's example message: input, value, max and limit name."""
        reject = refusal(limiter(tensors={"max_elements": 10_000_000}),
                         predict(tensor((10**9,))))
        assert reject.message == 'input "x": 1000000000 elements > max 10000000 (max_elements)'
        assert "limits: max_elements" in reject.detail

    def test_scalar_broadcast_refused_by_default(self) -> None:
        """§7: [1e9] with one float (4 GB) is refused by the defaults."""
        assert "max_elements" in refusal(limiter(), predict(tensor((10**9,)))).message

    def test_string_broadcast_refused_by_default(self) -> None:
        """§7: [1e5] × one 1 MiB string is refused by the defaults."""
        reject = refusal(limiter(), predict(_strings(10**5, MiB)))
        assert reject.code is Code.RESOURCE_EXHAUSTED

    def test_rank_254_refused_by_default(self) -> None:
        """A valid rank-254 tensor is still over max_dims."""
        assert "254 dims > max 8" in refusal(limiter(), predict(tensor((1,) * 254))).message

    def test_dtype_not_allowed(self) -> None:
        """A dtype off the list is INVALID_ARGUMENT with its own reason."""
        reject = refusal(limiter(), predict(tensor(dtype=11, itemsize=1)))  # DT_QINT8
        assert reject.code is Code.INVALID_ARGUMENT
        assert reject.reason is Reason.INPUT_NOT_ALLOWED
        assert reject.message == 'input "x": dtype DT_QINT8 is not allowed (allowed_dtypes)'

    def test_dtype_allowlist_per_model(self) -> None:
        """CVE-2022-23583: a model can pin its input dtype, so INT64/STRING into a
        float input is refused."""
        lim = limiter(models=[{"models": ["half_*"], "tensors": {"allowed_dtypes": ["DT_FLOAT"]}}])
        lim.check(predict(tensor(dtype=1), model="half_plus_two"))
        for dtype in (9, 7):
            assert "is not allowed" in refusal(
                lim, predict(tensor(dtype=dtype, itemsize=8), model="half_plus_two")).message
        lim.check(predict(tensor(dtype=9, itemsize=8), model="other"))

    def test_empty_tensor(self) -> None:
        """A 0 dim is refused unless allow_empty (CVE-2021-41209)."""
        reject = refusal(limiter(), predict(tensor((0, 3))))
        assert reject.code is Code.INVALID_ARGUMENT
        assert "empty tensor" in reject.message
        limiter(tensors={"allow_empty": True}).check(predict(tensor((0, 3))))

    def test_batch_only_for_rank_one_or_more(self) -> None:
        """A scalar has no batch dimension."""
        limiter(tensors={"max_batch": 1}).check(predict(tensor(())))

    def test_no_batch_cap(self) -> None:
        """max_batch: null leaves only max_elements."""
        limiter(tensors={"max_batch": None}).check(predict(tensor((5_000_000,))))


EXAMPLE_BOUNDARIES = [
    ("max_examples", 100, lambda v: ExampleFacts(v, 1, 10, 0, 34 * v)),
    ("max_features", 20, lambda v: ExampleFacts(1, v, 10, 0, 34)),
    ("max_value_bytes", 500, lambda v: ExampleFacts(1, 1, v, 0, v + 24)),
    ("max_context_copy_bytes", 1000, lambda v: ExampleFacts(10, 1, 1, v // 10,
                                                            10 * 24 + v)),
    ("max_decoded_bytes", 5000, lambda v: ExampleFacts(1, 1, 1, 0, v)),
]


class TestExampleLimits:
    """Each example limit: exactly at it passes, one over fails."""

    @pytest.mark.parametrize("key, value, make", EXAMPLE_BOUNDARIES,
                             ids=[b[0] for b in EXAMPLE_BOUNDARIES])
    def test_boundary(self, key: str, value: int, make: Any) -> None:
        """At the limit passes; one over (10 over for the product) fails."""
        lim = limiter(examples={key: value})
        lim.check(Facts(targets=(target(),), examples=make(value)))
        over = make(value + (10 if key == "max_context_copy_bytes" else 1))
        reject = refusal(lim, Facts(targets=(target(),), examples=over))
        assert reject.code is Code.RESOURCE_EXHAUSTED
        assert reject.message.endswith(f"({key})") and f"max {value}" in reject.message

    def test_context_amplification_by_default(self) -> None:
        """docs/wire-facts.md §1.3: 1 MiB context × 10k empty examples is refused by the defaults."""
        facts = ExampleFacts(10_000, 1, MiB, MiB, 10_000 * (24 + MiB))
        reject = refusal(limiter(), Facts(targets=(target(),), examples=facts))
        assert "10000 examples × 1048576-byte context" in reject.message


class TestOverrides:
    """Per-model (and per-signature) overrides: first match wins, omitted keys inherit."""

    LIMITS: ClassVar[dict[str, Any]] = {
        "tensors": {"max_elements": 100, "max_dims": 4},
        "models": [
            {"models": ["big"], "signatures": ["batch"], "tensors": {"max_elements": 10_000}},
            {"models": ["big", "huge*"], "tensors": {"max_elements": 1000}},
            {"models": ["*"], "tensors": {"max_elements": 5}},
        ],
    }

    def test_first_match_wins(self) -> None:
        """`big` with signature batch gets 10000, other signatures 1000, others 5."""
        lim = limiter(**self.LIMITS)
        lim.check(predict(tensor((10_000,)), model="big", signature="batch"))
        lim.check(predict(tensor((1000,)), model="big"))
        assert "max 1000" in refusal(lim, predict(tensor((1001,)), model="huge-1")).message
        assert "max 5" in refusal(lim, predict(tensor((6,)), model="small")).message

    def test_omitted_keys_inherit(self) -> None:
        """max_dims is not overridden, so the global 4 applies to `big`."""
        lim = limiter(**self.LIMITS)
        assert "(max_dims)" in refusal(lim, predict(tensor((1,) * 5), model="big")).message
        assert "limits.models[1]" in refusal(lim, predict(tensor((1001,)), model="big")).detail

    def test_all_targets_must_pass(self) -> None:
        """MultiInference: every task's limits apply."""
        lim = limiter(**self.LIMITS)
        facts = Facts(targets=(target("big", "batch"), target("big", "other")),
                      tensors=(tensor((5000,)),))
        assert "max 1000" in refusal(lim, facts).message

    def test_no_targets_use_globals(self) -> None:
        """Methods without a model (health) get the global limits."""
        limiter(**self.LIMITS).check(Facts())


class TestConfig:
    """The limits section validates names, ranges and combinations."""

    BASE: ClassVar[dict[str, Any]] = {"listen": {"plaintext": True},
                                      "upstreams": {"u": {"address": "127.0.0.1:1"}}}

    def config_error(self, limits: dict[str, Any]) -> ConfigError:
        with pytest.raises(ConfigError) as info:
            validate_config({**self.BASE, "limits": limits})
        return info.value

    def test_defaults(self) -> None:
        """Safe defaults without any limits section."""
        limits = validate_config(self.BASE).limits
        assert limits.tensors.max_elements == 16 * MiB
        assert limits.tensors.max_request_bytes == 64 * MiB < 2**31
        assert limits.tensors.max_string_element_bytes == MiB
        assert "DT_RESOURCE" not in limits.tensors.allowed_dtypes
        assert limits.examples.max_examples == 10_000
        assert limits.rate is None and limits.concurrency.per_principal == 32
        assert (limits.deadline.max_s, limits.deadline.default_s) == (60, 30)

    @pytest.mark.parametrize("name", ["DT_RESOURCE", "DT_VARIANT", "DT_INVALID", "DT_FLOAT_REF"])
    def test_never_allowed_dtypes(self, name: str) -> None:
        """Listing an always-refused dtype is a config error."""
        err = self.config_error({"tensors": {"allowed_dtypes": ["DT_FLOAT", name]}})
        assert err.path == "limits.tensors.allowed_dtypes" and "can never be allowed" in err.problem

    def test_unknown_dtype_name(self) -> None:
        """Unknown names are errors."""
        assert "unknown dtype" in self.config_error(
            {"tensors": {"allowed_dtypes": ["float32"]}}).problem

    def test_exotic_dtype_can_be_enabled(self) -> None:
        """Quantized dtypes are off by default but may be listed."""
        cfg = validate_config({**self.BASE, "limits": {"tensors": {"allowed_dtypes": ["DT_QINT8"]}}})
        assert cfg.limits.tensors.allowed_dtypes == ["DT_QINT8"]

    @pytest.mark.parametrize("limits, path", [
        ({"tensors": {"max_elements": -1}}, "limits.tensors.max_elements"),
        ({"tensors": {"max_request_bytes": 2**31}}, "limits.tensors.max_request_bytes"),
        ({"tensors": {"max_dims": 255}}, "limits.tensors.max_dims"),
        ({"tensors": {"bogus": 1}}, "limits.tensors.bogus"),
        ({"examples": {"max_examples": 1_000_001}}, "limits.examples.max_examples"),
        ({"rate": {"rate": 0, "burst": 1}}, "limits.rate.rate"),
        ({"concurrency": {"per_principal": 0}}, "limits.concurrency.per_principal"),
        ({"deadline": {"max_s": 10, "default_s": 20}}, "limits.deadline"),
        ({"models": [{"models": ["m"]}]}, "limits.models[0]"),
        ({"models": [{"models": []}]}, "limits.models[0].models"),
    ])
    def test_errors(self, limits: dict[str, Any], path: str) -> None:
        """Bad values name their key path."""
        assert self.config_error(limits).path == path

    def test_every_key_documented(self) -> None:
        """Every key of the limits schema carries a description (the README is made from them)."""
        def walk(model: Any) -> None:
            for name, field in model.model_fields.items():
                assert field.description, f"{model.__name__}.{name}"
                for sub in (field.annotation, *getattr(field.annotation, "__args__", ())):
                    if isinstance(sub, type) and hasattr(sub, "model_fields"):
                        walk(sub)
        walk(Limits)


class TestRate:
    """Token buckets per principal, with an injected clock."""

    def test_burst_then_refill(self) -> None:
        """`burst` calls pass at once, the next fails, one more passes after 1/rate s."""
        clock = [100.0]
        lim = limiter(clock, rate={"rate": 2, "burst": 3}, concurrency={"per_principal": None})
        for _ in range(3):
            lim.admit(ALICE, predict())
        with pytest.raises(Reject) as info:
            lim.admit(ALICE, predict())
        assert (info.value.code, info.value.reason) == (Code.RESOURCE_EXHAUSTED,
                                                        Reason.RATE_LIMITED)
        assert info.value.message == ("rate limit: more than 2 calls/s (burst 3) for this "
                                      "principal (rate)")
        clock[0] += 0.49
        with pytest.raises(Reject):
            lim.admit(ALICE, predict())
        clock[0] += 0.01
        lim.admit(ALICE, predict())
        clock[0] += 100
        for _ in range(3):  # refills up to burst, not beyond
            lim.admit(ALICE, predict())
        with pytest.raises(Reject):
            lim.admit(ALICE, predict())

    def test_per_principal(self) -> None:
        """Each principal has its own bucket."""
        lim = limiter(rate={"rate": 1, "burst": 1})
        lim.admit(ALICE, predict())
        lim.admit(BOB, predict())
        with pytest.raises(Reject):
            lim.admit(ALICE, predict())

    def test_per_model_bucket(self) -> None:
        """A model's own bucket applies on top of the global one, all or nothing."""
        lim = limiter(rate={"rate": 1, "burst": 3},
                      models=[{"models": ["slow"], "rate": {"rate": 1, "burst": 1}}])
        lim.admit(ALICE, predict(model="slow"))
        with pytest.raises(Reject) as info:
            lim.admit(ALICE, predict(model="slow"))
        assert info.value.message.endswith("(models[0].rate)")
        lim.admit(ALICE, predict(model="fast"))   # the refusal took no global token
        lim.admit(ALICE, predict(model="fast"))
        with pytest.raises(Reject, match=r"\(rate\)"):
            lim.admit(ALICE, predict(model="fast"))
        assert lim.state.hits.snapshot() == {"models[0].rate": 1, "rate": 1}

    def test_size_refusal_takes_no_token(self) -> None:
        """A size refusal (admission checks sizes before the rate) costs no token."""
        lim = limiter(rate={"rate": 1, "burst": 1})
        with pytest.raises(Reject, match="max_elements"):
            lim.check(predict(tensor((10**9,))))
        lim.admit(ALICE, predict())

    def test_full_buckets_are_forgotten(self) -> None:
        """Many principals do not grow memory once their buckets have refilled."""
        clock = [0.0]
        lim = limiter(clock, rate={"rate": 1000, "burst": 10}, concurrency={"per_principal": None})
        for i in range(10_001):
            lim.admit(Principal(subject=f"p{i}", issuer="i", has_token=True), predict())
            clock[0] += 0.001 if i < 10_000 else 10
        assert len(lim.state.buckets) < 100


class TestConcurrency:
    """Slots per principal and in total; excess refused at once; released by the lease."""

    def test_per_principal(self) -> None:
        """The third concurrent call of a principal with per_principal 2 is refused."""
        lim = limiter(concurrency={"per_principal": 2})
        leases = [Lease(), Lease()]
        for lease in leases:
            lim.hold(ALICE, lease)
        with pytest.raises(Reject) as info:
            lim.hold(ALICE, Lease())
        assert info.value.reason is Reason.CONCURRENCY_LIMITED
        assert "2 calls in flight for this principal" in info.value.message
        lim.hold(BOB, Lease())
        leases[0].release()
        lim.hold(ALICE, Lease())

    def test_total(self) -> None:
        """The total cap counts every principal."""
        lim = limiter(concurrency={"per_principal": None, "total": 2})
        first, second = Lease(), Lease()
        lim.hold(ALICE, first)
        lim.hold(BOB, second)
        with pytest.raises(Reject, match=r"\(total\)"):
            lim.hold(Principal(subject="carol", issuer="i", has_token=True), Lease())
        second.release()
        lim.hold(ALICE, Lease())

    def test_release_is_idempotent(self) -> None:
        """Releasing twice frees one slot; an unused lease releases nothing."""
        lim = limiter()
        lease = Lease()
        lim.hold(ALICE, lease)
        assert lim.state.snapshot() == (1, {ALICE.display(): 1})
        lease.release()
        lease.release()
        Lease().release()
        assert lim.state.snapshot() == (0, {})

    def test_refused_call_holds_nothing(self) -> None:
        """A call refused by a concurrency cap takes no slot."""
        lim = limiter(concurrency={"per_principal": 1})
        lim.hold(ALICE, Lease())
        with pytest.raises(Reject):
            lim.hold(ALICE, Lease())
        assert lim.state.snapshot() == (1, {ALICE.limit_key(): 1})

    def test_certificate_with_and_without_token_is_one_caller(self) -> None:
        """A certificate alone and the same certificate plus a token share one slot
        count and one bucket; a token alone is its own caller."""
        cert = Principal(spiffe_id="spiffe://td/a", has_certificate=True)
        both = cert.merged(ALICE)
        lim = limiter(concurrency={"per_principal": 1}, rate={"rate": 1, "burst": 1})
        lim.hold(cert, Lease())
        with pytest.raises(Reject, match="per_principal"):
            lim.hold(both, Lease())
        lim.hold(ALICE, Lease())
        lim.admit(both, predict())
        with pytest.raises(Reject, match=r"\(rate\)"):
            lim.admit(cert, predict())

    def test_threads(self) -> None:
        """Concurrent admits never exceed the cap (counts only)."""
        lim = limiter(concurrency={"per_principal": 5})
        admitted, refused, barrier = [], [], threading.Barrier(20)

        def attempt() -> None:
            barrier.wait()
            lease = Lease()
            try:
                lim.hold(ALICE, lease)
                admitted.append(lease)
            except Reject:
                refused.append(1)

        threads = [threading.Thread(target=attempt) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert (len(admitted), len(refused)) == (5, 15)


class TestDeadline:
    """Client deadlines above max_s are lowered; none gets default_s; streams keep theirs."""

    @pytest.mark.parametrize("remaining, unary, expected", [
        (None, True, 30.0), (1000.0, True, 60.0), (60.0, True, 60.0), (5.0, True, 5.0),
        (None, False, None), (1000.0, False, 1000.0),
    ])
    def test_timeout(self, remaining: float | None, unary: bool, expected: float | None) -> None:
        """The timeout sent upstream."""
        assert limiter().timeout(remaining, unary=unary) == expected


class TestCounters:
    """Thread-safe counts by key."""

    def test_concurrent_adds(self) -> None:
        """Adds from many threads are all counted."""
        counters = Counters()
        threads = [threading.Thread(target=lambda: [counters.add("k") for _ in range(1000)])
                   for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert counters.snapshot() == {"k": 8000}
