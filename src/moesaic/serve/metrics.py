"""Prometheus metrics, one :class:`~prometheus_client.CollectorRegistry` per app (tests run several)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from moesaic.errors import missing_extra

if TYPE_CHECKING:  # pragma: no cover
    from prometheus_client import CollectorRegistry

__all__ = ["ServeMetrics"]

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32)


class ServeMetrics:
    """Counters the server updates; :meth:`render` gives the Prometheus text format."""

    def __init__(self) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError:  # pragma: no cover - part of the serve extra
            raise missing_extra("prometheus-client", "serve") from None
        self.registry: CollectorRegistry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("moesaic_requests", "HTTP requests served", ["route", "status"], registry=r)
        self.latency = Histogram(
            "moesaic_request_latency_seconds", "request latency", ["route"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.tokens = Counter("moesaic_tokens", "tokens processed", ["kind"], registry=r)
        self.queue_depth = Gauge("moesaic_queue_depth", "requests waiting for the model", registry=r)
        self.errors = Counter("moesaic_errors", "error responses by code", ["code"], registry=r)
        self.batch_size = Histogram(
            "moesaic_batch_size", "requests per generate call", buckets=_BATCH_BUCKETS, registry=r
        )

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def observe_tokens(self, prompt: int, completion: int) -> None:
        self.tokens.labels(kind="prompt").inc(prompt)
        self.tokens.labels(kind="completion").inc(completion)

    def observe_error(self, code: str | None) -> None:
        self.errors.labels(code=code or "unknown").inc()

    def observe_batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def set_depth(self, depth: int) -> None:
        self.queue_depth.set(depth)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
