"""Limit: input sizes, rates, concurrency and deadlines (docs/limits.md).

Runs after authorize and before forward. Size checks are pure functions of the resolved
limits (`Caps`) and the request's `Facts`. The only state, the token buckets and the
in-flight counts, is a `LimitState` that outlives configs (the runtime owns it, so a
reload neither resets rates nor forgets calls in flight). The config is compiled once: per-model
overrides become one regex each, and a (model, signature) pair resolves to its `Caps`
once and is then looked up. Size refusals are RESOURCE_EXHAUSTED, a dtype not allowed
is INVALID_ARGUMENT; messages name the input, the value and the limit key, e.g.
`input "x": 1000000000 elements > max 16777216 (max_elements)`.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from proxy.cache import Memo
from proxy.call import ExampleFacts, Facts, ModelTarget, Principal, TensorFacts
from proxy.config.limits import ExampleLimits, Limits, RateLimit, TensorLimits
from proxy.counters import Counters
from proxy.dtypes import BY_NAME, name_of
from proxy.errors import ConfigError, Reason, Reject
from proxy.globs import compile_globs
from proxy.inspect.tensors import label

Clock = Callable[[], float]
_CACHE_MAX = 4096        # resolved (model, signature) pairs kept; names come from clients
_BUCKETS_PRUNE_AT = 10_000
# Refusal name of a limit state whose fixed table has no room for a new caller
# (`shared_limits.py`); LimitState never returns it.
TABLE_FULL = "limits.table_full"


class LimitStore(Protocol):
    """What a Limiter needs of its state: `LimitState` (one process) or
    `shared_limits.SharedLimitState` (every worker of one instance)."""

    hits: Counters

    def hold(self, who: str, per_principal: int | None, total: int | None) -> str | None: ...
    def release(self, who: str) -> None: ...
    def take(self, who: str, buckets: list[tuple[str, RateLimit]], now: float) -> str | None: ...
    def snapshot(self) -> tuple[int, dict[str, int]]: ...


class LimitState:
    """What the limits remember between calls and across reloads: calls in flight (per
    caller and in total) and token buckets, in this process. `proxy/shared_limits.py`
    implements the same four methods over shared memory, so that `--workers N` processes
    enforce one instance-wide limit. One lock guards it (uncontended on the data plane's
    single event-loop thread; operators' threads read it too)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.buckets: dict[tuple[str, str], list[float]] = {}  # (bucket, who) -> tokens, at
        self._prune_at = _BUCKETS_PRUNE_AT
        self.in_flight: dict[str, int] = {}
        self.total = 0
        self.hits = Counters()

    def hold(self, who: str, per_principal: int | None, total: int | None) -> str | None:
        """Take a slot for `who`; the name of the cap that refused, or None."""
        with self._lock:
            return self._hold(who, per_principal, total)

    def _hold(self, who: str, per_principal: int | None, total: int | None) -> str | None:
        held = self.in_flight.get(who, 0)
        if total is not None and self.total >= total:
            return "concurrency.total"
        if per_principal is not None and held >= per_principal:
            return "concurrency.per_principal"
        self.in_flight[who] = held + 1
        self.total += 1
        return None

    def release(self, who: str) -> None:
        with self._lock:
            held = self.in_flight.get(who, 0) - 1
            if held > 0:
                self.in_flight[who] = held
            else:
                self.in_flight.pop(who, None)
            self.total -= 1

    def take(self, who: str, buckets: list[tuple[str, RateLimit]], now: float) -> str | None:
        """A token from every bucket or from none; the bucket that refused, or None."""
        with self._lock:
            return self._take(who, buckets, now)

    def _take(self, who: str, buckets: list[tuple[str, RateLimit]], now: float) -> str | None:
        states = []
        for key, rate in buckets:
            state = self.buckets.get((key, who))
            tokens = float(rate.burst) if state is None else min(
                float(rate.burst), state[0] + (now - state[1]) * rate.rate)
            if tokens < 1.0:
                return key
            states.append(((key, who), tokens, rate))
        for bucket_key, tokens, rate in states:
            self.buckets[bucket_key] = [tokens - 1.0, now, rate.rate, float(rate.burst)]
        if len(self.buckets) > self._prune_at:
            self._prune(now)
        return None

    def _prune(self, now: float) -> None:
        """Forget buckets that have refilled: a full bucket is the same as none."""
        for key, (tokens, then, rate, burst) in list(self.buckets.items()):
            if tokens + (now - then) * rate >= burst:
                del self.buckets[key]
        self._prune_at = max(_BUCKETS_PRUNE_AT, 2 * len(self.buckets))

    def snapshot(self) -> tuple[int, dict[str, int]]:
        """(total, per caller) calls in flight now; for tests and operators."""
        with self._lock:
            return self.total, dict(self.in_flight)


@dataclass(frozen=True, slots=True)
class Caps:
    """The limits that apply to one (model, signature): plain values."""

    source: str                 # config path the overrides came from, for audit
    tensors: TensorLimits
    allowed_dtypes: frozenset[int]
    examples: ExampleLimits
    rate: RateLimit | None      # the per-model bucket, if any
    rate_key: str | None


class LimitExceeded(Reject):
    """A limit refusal that names the limit key it broke (for the `hits` counters and
    the metrics)."""

    def __init__(self, limit: str, reason: Reason, message: str, detail: str) -> None:
        super().__init__(reason, message, detail)
        self.limit = limit


def _exceeded(limit: str, message: str, caps: Caps,
              reason: Reason = Reason.LIMIT_EXCEEDED) -> LimitExceeded:
    return LimitExceeded(limit, reason, f"{message} ({limit})",
                         detail=f"{message} ({caps.source}: {limit})")


def check_tensor(caps: Caps, t: TensorFacts) -> None:
    lim, who = caps.tensors, label(t.name)
    if t.dtype not in caps.allowed_dtypes:
        raise _exceeded("allowed_dtypes", f"{who}: dtype {name_of(t.dtype)} is not allowed",
                        caps, Reason.INPUT_NOT_ALLOWED)
    if t.elements == 0 and not lim.allow_empty:
        raise _exceeded("allow_empty", f"{who}: empty tensor (shape has a 0 dimension)",
                        caps, Reason.INPUT_NOT_ALLOWED)
    if len(t.shape) > lim.max_dims:
        raise _exceeded("max_dims", f"{who}: {len(t.shape)} dims > max {lim.max_dims}", caps)
    if t.elements > lim.max_elements:
        raise _exceeded("max_elements",
                        f"{who}: {t.elements} elements > max {lim.max_elements}", caps)
    if lim.max_batch is not None and t.shape and t.shape[0] > lim.max_batch:
        raise _exceeded("max_batch", f"{who}: batch {t.shape[0]} > max {lim.max_batch}", caps)
    if t.decoded_bytes > lim.max_tensor_bytes:
        raise _exceeded("max_tensor_bytes", f"{who}: {t.decoded_bytes} bytes decoded > "
                        f"max {lim.max_tensor_bytes}", caps)
    if t.max_string_bytes > lim.max_string_element_bytes:
        raise _exceeded("max_string_element_bytes", f"{who}: string element of "
                        f"{t.max_string_bytes} bytes > max {lim.max_string_element_bytes}", caps)
    if t.string_bytes > lim.max_string_tensor_bytes:
        raise _exceeded("max_string_tensor_bytes", f"{who}: {t.string_bytes} string bytes > "
                        f"max {lim.max_string_tensor_bytes}", caps)


def check_examples(caps: Caps, e: ExampleFacts) -> None:
    lim = caps.examples
    if e.examples > lim.max_examples:
        raise _exceeded("max_examples",
                        f"input: {e.examples} examples > max {lim.max_examples}", caps)
    if e.max_features > lim.max_features:
        raise _exceeded("max_features", f"input: an example has {e.max_features} features "
                        f"> max {lim.max_features}", caps)
    if e.max_value_bytes > lim.max_value_bytes:
        raise _exceeded("max_value_bytes", f"input: a feature of {e.max_value_bytes} bytes "
                        f"> max {lim.max_value_bytes}", caps)
    copies = e.examples * e.context_bytes
    if copies > lim.max_context_copy_bytes:
        raise _exceeded("max_context_copy_bytes", f"input: {e.examples} examples × "
                        f"{e.context_bytes}-byte context = {copies} bytes > max "
                        f"{lim.max_context_copy_bytes}", caps)
    if e.decoded_bytes > lim.max_decoded_bytes:
        raise _exceeded("max_decoded_bytes", f"input: {e.decoded_bytes} bytes decoded > max "
                        f"{lim.max_decoded_bytes}", caps)


def check_sizes(caps: Caps, facts: Facts) -> None:
    """Every size limit for one request under one set of caps; raises Reject."""
    total = 0
    for t in facts.tensors:
        check_tensor(caps, t)
        total += t.decoded_bytes
    if total > caps.tensors.max_request_bytes:
        raise _exceeded("max_request_bytes", f"request: {total} bytes decoded > max "
                        f"{caps.tensors.max_request_bytes}", caps)
    if facts.examples is not None:
        check_examples(caps, facts.examples)


def _globs(patterns: list[str], where: str) -> re.Pattern[str]:
    try:
        return compile_globs(patterns)
    except ValueError as exc:
        raise ConfigError(where, str(exc)) from None


_Section = TypeVar("_Section", TensorLimits, ExampleLimits)


class Lease:
    """Concurrency slots held by one call; the front releases it when the call ends."""

    __slots__ = ("_held", "_key")

    def __init__(self) -> None:
        self._held: LimitStore | None = None
        self._key = ""

    def release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.release(self._key)


def _merge(base: _Section, override: _Section | None) -> _Section:
    if override is None or not override.model_fields_set:
        return base
    return base.model_copy(update={k: getattr(override, k) for k in override.model_fields_set})


class Limiter:
    """Built once per config (`state.py`); per call: `hold` when it starts, `check` per
    message, `admit` once the first message passed, `timeout` for the upstream call."""

    def __init__(self, cfg: Limits, state: LimitStore, clock: Clock = time.monotonic) -> None:
        self._cfg = cfg
        self.state = state
        self._clock = clock
        self._global = self._caps("limits", cfg.tensors, cfg.examples, None, None)
        self._overrides = [
            (_globs(m.models, f"limits.models[{i}].models"),
             _globs(m.signatures, f"limits.models[{i}].signatures"),
             self._caps(f"limits.models[{i}]", _merge(cfg.tensors, m.tensors),
                        _merge(cfg.examples, m.examples), m.rate,
                        f"models[{i}]" if m.rate else None))
            for i, m in enumerate(cfg.models)]
        self._resolved: Memo[Caps] = Memo(_CACHE_MAX)

    @staticmethod
    def _caps(source: str, tensors: TensorLimits, examples: ExampleLimits,
              rate: RateLimit | None, rate_key: str | None) -> Caps:
        allowed = frozenset(BY_NAME[n].number for n in tensors.allowed_dtypes)
        return Caps(source, tensors, allowed, examples, rate, rate_key)

    # -- sizes ----------------------------------------------------------------------

    def caps_for(self, target: ModelTarget | None) -> Caps:
        if target is None:
            return self._global
        key = (target.name, target.signature or "")
        found = self._resolved.get(key)
        if found is None:
            found = next((caps for models, sigs, caps in self._overrides
                          if models.fullmatch(key[0]) and sigs.fullmatch(key[1])), self._global)
            self._resolved.put(key, found, len(key[0]) + len(key[1]))
        return found

    def _all_caps(self, facts: Facts) -> list[Caps]:
        if not facts.targets:
            return [self._global]
        found: list[Caps] = []
        for target in facts.targets:
            caps = self.caps_for(target)
            if all(caps is not seen for seen in found):
                found.append(caps)
        return found

    def check(self, facts: Facts) -> None:
        """Size limits of one request message (each message of a client stream)."""
        for caps in self._all_caps(facts):
            try:
                check_sizes(caps, facts)
            except LimitExceeded as refused:
                self.state.hits.add(refused.limit)
                raise

    # -- concurrency and rate -------------------------------------------------------

    def hold(self, principal: Principal, lease: Lease) -> None:
        """A concurrency slot for the caller, taken when the call starts (before its body
        is read), into `lease`, which the front releases when the call ends."""
        who = principal.limit_key()
        cfg = self._cfg.concurrency
        refused = self.state.hold(who, cfg.per_principal, cfg.total)
        if refused == TABLE_FULL:
            raise self._table_full(Reason.CONCURRENCY_LIMITED)
        if refused == "concurrency.total":
            raise self._refuse(refused, Reason.CONCURRENCY_LIMITED,
                               f"concurrency limit: {cfg.total} calls in flight (total)")
        if refused is not None:
            raise self._refuse(refused, Reason.CONCURRENCY_LIMITED,
                               f"concurrency limit: {cfg.per_principal} calls in flight "
                               "for this principal (per_principal)")
        lease._held, lease._key = self.state, who

    def admit(self, principal: Principal, facts: Facts) -> None:
        """A rate token from the global bucket and every per-model bucket the request's
        models use, all or none; sizes are `check`'s, run before."""
        buckets = [("", self._cfg.rate)] if self._cfg.rate else []
        buckets += [(c.rate_key, c.rate) for c in self._all_caps(facts) if c.rate_key and c.rate]
        if not buckets:
            return
        refused = self.state.take(principal.limit_key(), buckets, self._clock())
        if refused == TABLE_FULL:
            raise self._table_full(Reason.RATE_LIMITED)
        if refused is not None:
            rate = dict(buckets)[refused]
            limit = f"{refused}.rate" if refused else "rate"
            raise self._refuse(limit, Reason.RATE_LIMITED,
                               f"rate limit: more than {rate.rate:g} calls/s (burst "
                               f"{rate.burst}) for this principal ({limit})")

    def _table_full(self, reason: Reason) -> Reject:
        return self._refuse(TABLE_FULL, reason, "limits table full: too many callers tracked "
                            "at once (limits.table_size); try again later")

    def _refuse(self, limit: str, reason: Reason, message: str) -> Reject:
        self.state.hits.add(limit)
        return LimitExceeded(limit, reason, message, message)

    # -- deadlines ------------------------------------------------------------------

    def timeout(self, remaining: float | None, *, unary: bool) -> float | None:
        """The upstream timeout: the client's deadline capped at max_s, or default_s."""
        if not unary:
            return remaining
        deadline = self._cfg.deadline
        return deadline.default_s if remaining is None else min(remaining, deadline.max_s)
