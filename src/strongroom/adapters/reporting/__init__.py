"""The reporting store (the read side): DuckDB embedded, ClickHouse at scale."""

from strongroom.adapters.reporting.port import (
    AuthorizationRow,
    Changes,
    Lag,
    PaymentRow,
    Rebuilt,
    RefundRow,
    ReportingStore,
    ReportingUnavailable,
    ReportName,
    ReportQuery,
    reporting_store_from_url,
)

__all__ = [
    "AuthorizationRow",
    "Changes",
    "Lag",
    "PaymentRow",
    "Rebuilt",
    "RefundRow",
    "ReportName",
    "ReportQuery",
    "ReportingStore",
    "ReportingUnavailable",
    "reporting_store_from_url",
]
