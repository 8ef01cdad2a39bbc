"""Outbound HTTP to URLs merchants give us (webhook endpoints), refusing non-public targets."""

from strongroom.adapters.http.safe_client import (
    DeliveryError,
    Resolver,
    Response,
    SafeClient,
    SafeClientError,
    SystemResolver,
    Target,
    TargetRefused,
    check_url,
    classify_address,
)

__all__ = [
    "DeliveryError",
    "Resolver",
    "Response",
    "SafeClient",
    "SafeClientError",
    "SystemResolver",
    "Target",
    "TargetRefused",
    "check_url",
    "classify_address",
]
