"""Prometheus metrics: request latency by route, decisions by action, models and policy in use.

Each app gets its own registry (made in the lifespan, never at import), so two apps in one
process, as in tests, never share counters. Latency is measured by a plain ASGI middleware:
Starlette's `BaseHTTPMiddleware` would cost more per request than the whole measurement.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CONTENT_TYPE = CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
"""Seconds; fine below 10 ms, where a decision should be."""


class Metrics:
    """The service's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_seconds = Histogram(
            "refund_risk_http_request_duration_seconds",
            "Time from request to the last byte of the answer, by route.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.decisions = Counter(
            "refund_risk_decisions_total",
            "Decisions recorded, by action and whether they were made without a model.",
            ["action", "degraded"],
            registry=self.registry,
        )
        self.refund_requests = Counter(
            "refund_risk_refund_requests_total",
            "Refund requests decided and recorded, by goods category and reason (detailed "
            "reason too): the series the shipped alerting rules watch for spikes.",
            ["category", "reason", "reason_detail"],
            registry=self.registry,
        )
        self.refund_amount = Counter(
            "refund_risk_refund_requested_amount_total",
            "Money asked back in refund requests decided and recorded, by category and reason.",
            ["category", "reason"],
            registry=self.registry,
        )
        self.replays = Counter(
            "refund_risk_decision_replays_total",
            "Requests answered with a stored decision (same refund id again).",
            registry=self.registry,
        )
        self.store_failures = Counter(
            "refund_risk_decision_store_failures_total",
            "Decisions not recorded because the database did not take them (answered 503).",
            registry=self.registry,
        )
        self.record_timeouts = Counter(
            "refund_risk_decision_record_timeouts_total",
            "Decision requests answered 503 because their decision (or the customer's one "
            "before it) was not recorded within the record timeout; such a decision may still "
            "be recorded, and is then counted in refund_risk_decisions_total.",
            registry=self.registry,
        )
        self.write_batch = Histogram(
            "refund_risk_decision_write_batch_size",
            "Decisions recorded per database transaction.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.history_hits = Counter(
            "refund_risk_history_cache_hits_total",
            "Decisions whose customer's history (and linked accounts') in memory was the "
            "database's committed one (PostgreSQL).",
            registry=self.registry,
        )
        self.history_misses = Counter(
            "refund_risk_history_cache_misses_total",
            "Decisions that read their customer's history (or a linked account's) from the "
            "database: not in memory, or changed since by another process (PostgreSQL).",
            registry=self.registry,
        )
        self.history_evictions = Counter(
            "refund_risk_history_cache_evictions_total",
            "Customer histories dropped from memory to stay within history_cache_customers.",
            registry=self.registry,
        )
        self.history_size = Gauge(
            "refund_risk_history_cache_customers",
            "Customer histories held in memory.",
            registry=self.registry,
        )
        self.model_info = Gauge(
            "refund_risk_model_info",
            "The model versions in use (value 1), by model, version and alias.",
            ["model", "version", "alias"],
            registry=self.registry,
        )
        self.policy_info = Gauge(
            "refund_risk_policy_info",
            "The policy in use (value 1).",
            ["policy", "version", "hash"],
            registry=self.registry,
        )
        self.degraded = Gauge(
            "refund_risk_degraded",
            "1 when no abuse model is loaded and the rules-only policy decides.",
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, str], Any] = {}
        self._decision_children: dict[tuple[str, bool], Any] = {}
        self._refund_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one request's latency."""
        key = (method, route, str(status))
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.request_seconds.labels(*key)
        child.observe(seconds)

    def count_decision(self, action: str, degraded: bool) -> None:
        """Count one recorded decision."""
        key = (action, degraded)
        child = self._decision_children.get(key)
        if child is None:
            child = self._decision_children[key] = self.decisions.labels(
                action, str(degraded).lower()
            )
        child.inc()

    def count_refund(self, category: str, reason: str, detail: str, amount: float) -> None:
        """Count one recorded refund request and the money it asks back."""
        key = (category, reason, detail)
        children = self._refund_children.get(key)
        if children is None:
            children = self._refund_children[key] = (
                self.refund_requests.labels(category, reason, detail),
                self.refund_amount.labels(category, reason),
            )
        children[0].inc()
        children[1].inc(amount)

    def set_models(self, models: dict[str, tuple[str, str] | None], degraded: bool) -> None:
        """Show which model versions are in use (name -> (version, alias), None if missing)."""
        self.model_info.clear()
        for name, loaded in models.items():
            if loaded is not None:
                self.model_info.labels(name, loaded[0], loaded[1]).set(1)
        self.degraded.set(1 if degraded else 0)

    def set_policy(self, name: str, version: int, content_hash: str) -> None:
        """Show which policy is in use."""
        self.policy_info.clear()
        self.policy_info.labels(name, str(version), content_hash).set(1)

    def render(self) -> bytes:
        """The text exposition format."""
        return bytes(generate_latest(self.registry))


class LatencyMiddleware:
    """Times every HTTP request and records it under its route's path template."""

    def __init__(self, app: ASGIApp, metrics: Callable[[], Metrics | None]) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            metrics = self.metrics()
            if metrics is not None:
                route = scope.get("route")
                # Unmatched paths share one label, so scanners cannot grow the label set.
                template = getattr(route, "path", None) or "unmatched"
                metrics.observe_request(
                    scope["method"], template, status, time.perf_counter() - started
                )
