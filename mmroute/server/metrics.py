"""Prometheus metrics of one server (a registry per app, so tests and several apps do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServerMetrics:
    """The server's counters and histograms; names are listed in docs/serving.md."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("mmroute_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("mmroute_request_latency_seconds", "request latency by endpoint (to the last byte)",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.routes = Counter("mmroute_routes", "routing decisions by chosen model", ["model"], registry=r)
        self.answers = Counter("mmroute_answers", "answers by the model that produced them", ["model"], registry=r)
        self.cost = Counter("mmroute_cost_usd", "USD spent on answers (failed billed attempts included)", ["model"],
                            registry=r)
        self.fallbacks = Counter("mmroute_fallbacks", "answers that came from a fallback after a provider fault",
                                 registry=r)
        self.escalations = Counter("mmroute_escalations", "cascade escalations to a stronger model", registry=r)
        self.errors = Counter("mmroute_errors", "failed requests by error type", ["type"], registry=r)
        self.feedback = Counter("mmroute_feedback", "feedback received, by kind and whether it was stored",
                                ["kind", "stored"], registry=r)
        self.batch_size = Histogram("mmroute_feature_batch_size", "queries per feature batch", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.batch_latency = Histogram("mmroute_feature_batch_seconds", "time to compute one feature batch",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.reloads = Counter("mmroute_router_reloads", "router versions picked up without a restart", registry=r)
        self.router_version = Gauge("mmroute_router_version", "the router version serving now (1 on its label)",
                                    ["version"], registry=r)
        self.retrains = Counter("mmroute_retrains", "in-server retrains by outcome (published, kept, skipped, failed)",
                                ["outcome"], registry=r)
        self.explored = Counter("mmroute_explored", "decisions that left the greedy choice to explore", registry=r)
        self.decisions_kept = Gauge("mmroute_decisions_remembered", "decisions held for feedback", registry=r)
        self.in_flight = Gauge("mmroute_requests_in_flight", "requests being handled now", registry=r)

    def serving(self, version: str | None) -> None:
        """Say which router version serves: its label 1, no other label left."""
        self.router_version.clear()
        self.router_version.labels(version or "unversioned").set(1)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_latency.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


__all__ = ["ServerMetrics"]
