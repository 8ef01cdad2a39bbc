"""The sandbox's 3-D Secure challenge page, which a customer's browser is sent to. A real
gateway hosts this on its own domain; the sandbox serves it here. Not part of /v1."""

from __future__ import annotations

import html

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from strongroom.entrypoints.api.deps import ContainerDep

router = APIRouter(prefix="/sandbox", include_in_schema=False)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sandbox 3-D Secure</title></head>
<body>
<h1>3-D Secure test challenge</h1>
<p>Charge <code>{charge}</code> for {amount} {currency}. Choose the outcome to simulate.</p>
<form method="post" action="/sandbox/3ds/{charge}/complete">
  <button type="submit" id="complete">Complete authentication</button></form>
<form method="post" action="/sandbox/3ds/{charge}/fail">
  <button type="submit" id="fail">Fail authentication</button></form>
</body></html>"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"</head><body><p>{body}</p></body></html>",
        status_code=status,
        headers={"X-Frame-Options": "DENY", "Content-Security-Policy": "default-src 'none'"},
    )


@router.get("/3ds/{charge_id}")
async def challenge(charge_id: str, container: ContainerDep) -> HTMLResponse:
    charge = await container.sandbox.charge(charge_id)
    if charge is None or charge["challenge"] != "pending":
        return _page("Not found", "There is no pending challenge here.", 404)
    return HTMLResponse(
        _PAGE.format(
            charge=html.escape(charge_id),
            amount=charge["amount"],
            currency=html.escape(charge["currency"].upper()),
        ),
        headers={"X-Frame-Options": "DENY"},
    )


@router.post("/3ds/{charge_id}/{outcome}")
async def answer(charge_id: str, outcome: str, container: ContainerDep) -> HTMLResponse:
    if outcome not in ("complete", "fail"):
        return _page("Not found", "Unknown outcome.", 404)
    if not await container.sandbox.answer_challenge(charge_id, succeeded=outcome == "complete"):
        return _page("Not found", "There is no pending challenge here.", 404)
    done = "completed" if outcome == "complete" else "failed"
    return _page("Done", f"Authentication {done}. You may return to the merchant.")
