"""OpenTelemetry tracing for one Container: spans for API requests, worker loop passes and
gateway calls, exported to stderr or OTLP when STRONGROOM_TRACING asks for it.

Each container gets its own TracerProvider instead of the process-wide one OpenTelemetry keeps
(which can be set only once per process): tests then bring their own exporter, and two
containers never mix spans. When tracing is off no provider exists at all and `span()` hands
back a shared do-nothing span, so the hot path pays one attribute check.

Span attributes are names, ids, kinds and statuses: never an amount, a card token, a key or a
header value, and exceptions are recorded by type only (their messages are not ours to vet).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from typing import Literal

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from strongroom import __version__

TracingMode = Literal["off", "console", "otlp"]

_NO_SPAN: contextlib.nullcontext[Span] = contextlib.nullcontext(trace.INVALID_SPAN)


class Tracing:
    """A container's tracer, or nothing when tracing is off."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        self._tracer = (
            provider.get_tracer("strongroom", __version__) if provider is not None else None
        )

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    @contextlib.contextmanager
    def _span(
        self, name: str, attributes: Mapping[str, AttributeValue] | None, kind: SpanKind
    ) -> Iterator[Span]:
        assert self._tracer is not None
        with self._tracer.start_as_current_span(
            name,
            kind=kind,
            attributes=attributes,
            # The exception's message could quote anything (a URL, a response): record its type.
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except BaseException as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                span.set_attribute("error.type", type(exc).__name__)
                raise

    def span(
        self,
        name: str,
        attributes: Mapping[str, AttributeValue] | None = None,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> contextlib.AbstractContextManager[Span]:
        """A span around the block, the current span's child; a no-op span when tracing is
        off. An exception leaving the block marks the span as an error, by type only."""
        if self._tracer is None:
            return _NO_SPAN
        return self._span(name, attributes, kind)

    def gateway_call(
        self, gateway: str, operation: str, operation_id: str
    ) -> contextlib.AbstractContextManager[Span]:
        """The span of one gateway call: which gateway, what kind of call, which of our
        operations (its id, never its amount or card token). Set the answer's kind on it with
        `span.set_attribute("strongroom.gateway.outcome", …)`."""
        operation = str(operation)  # a StrEnum member as its plain value, for exporters
        return self.span(
            f"gateway {operation}",
            {
                "strongroom.gateway": gateway,
                "strongroom.gateway.operation": operation,
                "strongroom.gateway.operation_id": operation_id,
            },
            kind=SpanKind.CLIENT,
        )

    def shutdown(self) -> None:
        """Export what is still buffered and stop (blocks up to the exporter's timeout)."""
        if self.provider is not None:
            self.provider.shutdown()


def tracing_from_settings(mode: TracingMode, *, exporter: SpanExporter | None = None) -> Tracing:
    """The tracing STRONGROOM_TRACING asks for. `exporter` replaces the one the mode would
    pick (the seam tests use to collect spans in memory); it is exported to synchronously, so
    spans are there as soon as they end. With mode 'off' nothing is set up, exporter or not."""
    if mode == "off":
        return Tracing()
    processor: SpanProcessor
    if exporter is not None:
        processor = SimpleSpanProcessor(exporter)
    elif mode == "console":
        processor = BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr))
    else:
        # Imported only when asked for: it pulls in protobuf and requests. The endpoint,
        # headers and timeout come from the standard OTEL_EXPORTER_OTLP_* variables.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processor = BatchSpanProcessor(OTLPSpanExporter())
    provider = TracerProvider(
        resource=Resource.create({"service.name": "strongroom", "service.version": __version__})
    )
    provider.add_span_processor(processor)
    return Tracing(provider)
