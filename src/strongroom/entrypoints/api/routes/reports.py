"""/v1/reports: the standard reports for the key's merchant and mode, served from the reporting
store (never the write store)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from strongroom.adapters.reporting.port import ReportQuery
from strongroom.entrypoints.api.deps import CallerDep, ContainerDep, action
from strongroom.entrypoints.api.routes._docs import READ, errors
from strongroom.service_layer.reporting import parse_report_name

router = APIRouter(prefix="/v1/reports", tags=["reports"])

_DAY = "A UTC day, YYYY-MM-DD; both ends of the range are included."
From = Annotated[date | None, Query(alias="from", description=_DAY)]
To = Annotated[date | None, Query(alias="to", description=_DAY)]


class ReportOut(BaseModel):
    object: Literal["report"] = "report"
    name: str = Field(description="volume, authorization_rate, decline_reasons or refund_rate.")
    computed_at: int = Field(
        description="When the rows were computed (Unix seconds); the same result is served for "
        "up to STRONGROOM_REPORT_CACHE_SECONDS."
    )
    rows: list[dict[str, Any]]


@router.get(
    "/{name}",
    response_model=ReportOut,
    responses=errors(*READ),
    openapi_extra=action("reports.read"),
)
async def get_report(
    name: str,
    caller: CallerDep,
    container: ContainerDep,
    start: From = None,
    end: To = None,
) -> Response:
    """`volume`: payments by day, currency, gateway and status (count, amount).
    `authorization_rate`: authorization attempts by day, currency and gateway.
    `decline_reasons`: declined attempts by code and decline code.
    `refund_rate`: money captured and refunded, by the payment's day and currency."""
    report = await container.reporting.report(
        parse_report_name(name),
        ReportQuery(livemode=caller.livemode, merchant_id=caller.merchant_id, start=start, end=end),
    )
    body = ReportOut.model_validate(report.as_dict())
    return Response(body.model_dump_json(), media_type="application/json")
