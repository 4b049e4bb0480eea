"""Prometheus metrics, one registry per app (so several apps can live in one process)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_MODEL = ("model",)  # per-model metrics carry the model's name

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass
class Metrics:
    """Every metric the service exports, named per stage."""

    registry: CollectorRegistry
    requests: Counter
    request_seconds: Histogram
    texts: Counter
    queue_size: Gauge
    queue_seconds: Histogram
    inference_seconds: Histogram
    tokenize_seconds: Histogram
    batch_size: Histogram
    batch_calls: Histogram
    batch_tokens: Histogram
    batch_padding: Histogram
    batch_failures: Counter
    dropped_texts: Counter
    inflight_bytes: Gauge
    inflight_bytes_limit: Gauge
    queue_wait_estimate: Gauge
    held_retries: Counter
    full_gc_seconds: Histogram

    @classmethod
    def create(cls) -> Metrics:
        """A fresh registry with all metrics registered."""
        r = CollectorRegistry()
        return cls(
            full_gc_seconds=Histogram(
                "rankrm_full_gc_seconds",
                "Full garbage collections run on the service's schedule (the event loop "
                "waits for each)",
                buckets=_LATENCY,
                registry=r,
            ),
            registry=r,
            requests=Counter(
                "rankrm_requests",
                "HTTP requests by endpoint and status",
                ["endpoint", "status"],
                registry=r,
            ),
            request_seconds=Histogram(
                "rankrm_request_seconds",
                "Request latency by endpoint",
                ["endpoint"],
                buckets=_LATENCY,
                registry=r,
            ),
            texts=Counter("rankrm_texts", "Texts scored", labelnames=_MODEL, registry=r),
            queue_size=Gauge(
                "rankrm_queue_size", "Texts waiting for a batch", labelnames=_MODEL, registry=r
            ),
            queue_seconds=Histogram(
                "rankrm_queue_seconds",
                "Time a text waited for its batch",
                buckets=_LATENCY,
                labelnames=_MODEL,
                registry=r,
            ),
            inference_seconds=Histogram(
                "rankrm_inference_seconds",
                "Model time per batch",
                buckets=_LATENCY,
                labelnames=_MODEL,
                registry=r,
            ),
            tokenize_seconds=Histogram(
                "rankrm_tokenize_seconds", "Tokenisation per request", buckets=_LATENCY, registry=r
            ),
            batch_size=Histogram(
                "rankrm_batch_size",
                "Texts per batch",
                buckets=_SIZES,
                labelnames=_MODEL,
                registry=r,
            ),
            batch_calls=Histogram(
                "rankrm_batch_model_calls",
                "Model calls per batch (split by length where padding costs more than a call)",
                buckets=(1, 2, 3, 4, 6, 8, 16),
                labelnames=_MODEL,
                registry=r,
            ),
            batch_tokens=Histogram(
                "rankrm_batch_tokens",
                "Tokens per batch, padding included (summed over its calls)",
                buckets=tuple(64 * 2**i for i in range(10)),
                labelnames=_MODEL,
                registry=r,
            ),
            batch_padding=Histogram(
                "rankrm_batch_padding_ratio",
                "Share of a batch that is padding",
                buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75),
                labelnames=_MODEL,
                registry=r,
            ),
            batch_failures=Counter(
                "rankrm_batch_failures",
                "Batches the model failed on",
                labelnames=_MODEL,
                registry=r,
            ),
            dropped_texts=Counter(
                "rankrm_dropped_texts",
                "Texts dropped before scoring because their request was gone",
                labelnames=_MODEL,
                registry=r,
            ),
            inflight_bytes=Gauge(
                "rankrm_inflight_bytes", "Bytes of request bodies held now", registry=r
            ),
            inflight_bytes_limit=Gauge(
                "rankrm_inflight_bytes_limit",
                "Bytes of request bodies held at most (past it: 429)",
                registry=r,
            ),
            queue_wait_estimate=Gauge(
                "rankrm_queue_wait_estimate_seconds",
                "Model time the queued texts need, at the measured speed",
                labelnames=_MODEL,
                registry=r,
            ),
            held_retries=Counter(
                "rankrm_held_retries",
                "Requests held until the Retry-After their connection was given had passed",
                registry=r,
            ),
        )


class RequestCounter:
    """Counts requests by endpoint and status and times them; the labelled series are
    looked up once each (a lookup takes a lock)."""

    def __init__(self, metrics: Metrics, known: frozenset[str]) -> None:
        self.metrics = metrics
        self.known = known  # the app's routes; any other path counts as "other"
        self._counts: dict[tuple[str, int], Counter] = {}
        self._times: dict[str, Histogram] = {}

    def record(self, path: str, status: int, seconds: float) -> None:
        """One request to ``path`` answered ``status`` after ``seconds``."""
        endpoint = path if path in self.known else "other"
        key = (endpoint, status)
        if key not in self._counts:
            self._counts[key] = self.metrics.requests.labels(endpoint, str(status))
        self._counts[key].inc()
        if endpoint not in self._times:
            self._times[endpoint] = self.metrics.request_seconds.labels(endpoint)
        self._times[endpoint].observe(seconds)
