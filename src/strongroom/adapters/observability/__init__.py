"""Observability: Prometheus metrics and OpenTelemetry tracing, one set per Container."""

from strongroom.adapters.observability.metrics import BreakerState, Metrics
from strongroom.adapters.observability.tracing import Tracing, tracing_from_settings

__all__ = ["BreakerState", "Metrics", "Tracing", "tracing_from_settings"]
