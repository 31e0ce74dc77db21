"""Prometheus metrics: what every call, fetch and reload leaves behind, and `/metrics`.

Calls are counted in one place, `observe`, which the front calls when a call ends (beside
the audit event), from the `Call` record alone; no stage touches a metric. Every label
value comes from a closed set, so no caller can grow the series: methods are the paths
the config's method table knows (else `other`), models only those the config names
literally (else `other`; none: empty), reasons and statuses are enums, limit, upstream and
issuer names come from the config.

One process keeps its metrics in `REGISTRY`. Under `serve --workers N` the supervisor
sets PROMETHEUS_MULTIPROC_DIR (workers.py) before any worker starts, prometheus-client
then keeps every value in a file of that directory per process, and `render` sums them
over all workers, whichever worker the scrape reaches. Gauges of a worker that died are
dropped (`worker_died`). Certificate expiry is computed at scrape time from the files the
config names; the scraping worker's view stands for all (they read the same files).
"""

from __future__ import annotations

import os
import pathlib
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from cryptography import x509
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from proxy.call import Call
from proxy.config import Config
from proxy.errors import Reason

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own name for it
CONTENT_TYPE = CONTENT_TYPE_LATEST
OTHER = "other"
_GLOB = frozenset("*?[")

REGISTRY = CollectorRegistry()
disable_created_metrics()  # no `_created` series: one per labelled child, never needed here

# tfgate's own time is short (admission is tens of µs; receiving a large message longer);
# the upstream's spans a model run.
_OWN_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                0.25, 0.5, 1.0, 2.5, 10.0)
_UPSTREAM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                     5.0, 10.0, 30.0, 60.0)

CALLS = Counter("tfgate_calls", "Calls by method, model, decision, reason and status.",
                ["method", "model", "decision", "reason", "status"], registry=REGISTRY)
OWN_SECONDS = Histogram(
    "tfgate_proxy_duration_seconds", "tfgate's own time per call: from the headers until "
    "forwarding began (admission, receiving the request message), or until the refusal.",
    ["method", "decision"], buckets=_OWN_BUCKETS, registry=REGISTRY)
UPSTREAM_SECONDS = Histogram(
    "tfgate_upstream_duration_seconds", "Time from forwarding to the end of the call "
    "(the upstream's answer, relayed).", ["method", "upstream"], buckets=_UPSTREAM_BUCKETS,
    registry=REGISTRY)
IN_FLIGHT = Gauge("tfgate_calls_in_flight", "Calls between their headers and their end.",
                  registry=REGISTRY, multiprocess_mode="livesum")
LIMIT_REFUSALS = Counter("tfgate_limit_refusals", "Calls refused by a limit, by limit name.",
                         ["limit"], registry=REGISTRY)
UPSTREAM_ERRORS = Counter("tfgate_upstream_errors", "Forwarded calls the upstream failed "
                          "(its error status, or unreachable).", ["upstream", "status"],
                          registry=REGISTRY)
RELOADS = Counter("tfgate_reloads", "Config reloads by result (ok, error); each worker "
                  "counts its own.", ["result"], registry=REGISTRY)
JWKS_FETCHES = Counter("tfgate_jwks_fetches", "Fetches of an issuer's keys by result "
                       "(ok, error).", ["issuer", "result"], registry=REGISTRY)
SHADOW_DIFFERENCES = Counter(
    "tfgate_shadow_differences", "Calls the shadow policy would decide differently.",
    ["method", "enforced", "shadow"], registry=REGISTRY)
HEALTH_CHECKS = Counter("tfgate_health_checks", "Health answers tfgate gave itself, by "
                        "protocol (grpc, http) and answer.", ["protocol", "ready"],
                        registry=REGISTRY)

if not os.environ.get(MULTIPROC_ENV):
    ProcessCollector(registry=REGISTRY)  # per process: meaningless summed over workers


class Labels:
    """The label values one config allows: its methods and the models it names."""

    def __init__(self, methods: Iterable[str], models: Iterable[str]) -> None:
        self.methods = frozenset(methods)
        self.models = frozenset(m for m in models if not _GLOB & set(m))

    def method(self, path: str) -> str:
        return path if path in self.methods else OTHER

    def model(self, call: Call) -> str:
        targets = call.facts.targets if call.facts else ()
        if not targets:
            return ""
        return targets[0].name if targets[0].name in self.models else OTHER


def call_started() -> None:
    IN_FLIGHT.inc()


# The labelled children one call touches, by its label values: `.labels()` checks and
# locks on every use, a dict lookup does not. Bounded: every value is from a closed set.
_children: dict[tuple[str, str, str, Reason, str, str], tuple[Any, Any, Any]] = {}


def _children_for(method: str, model: str, decision: str, reason: Reason, status: str,
                  upstream: str) -> tuple[Any, Any, Any]:
    key = (method, model, decision, reason, status, upstream)
    found = _children.get(key)
    if found is None:
        found = _children[key] = (
            CALLS.labels(method, model, decision, reason.value, status),
            OWN_SECONDS.labels(method, decision),
            UPSTREAM_SECONDS.labels(method, upstream) if upstream else None)
    return found


def observe(call: Call, labels: Labels) -> None:
    """Count one ended call (the front calls it once per call, after `call_started`)."""
    IN_FLIGHT.dec()
    method = labels.method(call.method)
    decision = "allow" if call.reason.forwarded else "deny"
    forwarded = call.forwarded_at
    calls, own, upstream = _children_for(
        method, labels.model(call), decision, call.reason, call.code.name,
        (call.upstream or "") if forwarded is not None else "")
    calls.inc()
    ended = call.ended if call.ended is not None else time.monotonic()
    if forwarded is None or upstream is None:
        own.observe(ended - call.started)
    else:
        own.observe(forwarded - call.started)
        upstream.observe(ended - forwarded)
    if call.limit is not None:
        LIMIT_REFUSALS.labels(call.limit).inc()
    if call.reason in (Reason.UPSTREAM_STATUS, Reason.UPSTREAM_UNAVAILABLE):
        UPSTREAM_ERRORS.labels(call.upstream or "", call.code.name).inc()
    if call.shadow is not None:
        SHADOW_DIFFERENCES.labels(method, "allow" if call.shadow.enforced_allowed else "deny",
                                  "allow" if call.shadow.allowed else "deny").inc()


def reload_finished(ok: bool) -> None:
    """The reload hook: one per reload attempt of this process."""
    RELOADS.labels("ok" if ok else "error").inc()


def jwks_fetched(issuer: str, ok: bool) -> None:
    JWKS_FETCHES.labels(issuer, "ok" if ok else "error").inc()


def health_answered(protocol: str, ready: bool) -> None:
    HEALTH_CHECKS.labels(protocol, "true" if ready else "false").inc()


class CertificateExpiry(Collector):
    """`tfgate_certificate_expiry_seconds{certificate}`: seconds until the earliest
    `notAfter` in each tracked PEM file (negative once expired), computed at scrape time.
    `track` replaces the whole set: the certificate-rotation hook calls it again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._not_after: dict[str, float] = {}

    def track(self, files: dict[str, pathlib.Path]) -> None:
        found = {}
        for name, path in files.items():
            when = earliest_not_after(path)
            if when is not None:
                found[name] = when
        with self._lock:
            self._not_after = found

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "tfgate_certificate_expiry_seconds", "Seconds until the earliest notAfter of "
            "the certificates in each file the config names.", labels=["certificate"])
        now = time.time()
        with self._lock:
            for name, when in sorted(self._not_after.items()):
                family.add_metric([name], when - now)
        yield family


def earliest_not_after(path: pathlib.Path) -> float | None:
    """The earliest expiry (Unix time) among the PEM certificates in `path`, or None."""
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        return None
    return min((c.not_valid_after_utc.timestamp() for c in certs), default=None)


CERTIFICATES = CertificateExpiry()
REGISTRY.register(CERTIFICATES)


def certificate_files(cfg: Config) -> dict[str, pathlib.Path]:
    """The certificate files of a config, by the label they get."""
    files: dict[str, pathlib.Path] = {}
    if cfg.listen.tls is not None:
        files["listen"] = cfg.listen.tls.cert
        if cfg.listen.tls.client_ca is not None:
            files["listen.client_ca"] = cfg.listen.tls.client_ca
    for name, upstream in cfg.upstreams.items():
        if upstream.tls is not None:
            files[f"upstreams.{name}.ca"] = upstream.tls.ca
            if upstream.tls.cert is not None:
                files[f"upstreams.{name}.cert"] = upstream.tls.cert
    return files


def render() -> bytes:
    """The exposition text: this process's metrics, or every worker's under --workers."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    registry.register(CERTIFICATES)
    return generate_latest(registry)


def worker_died(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters stay: they only ever grew)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)
