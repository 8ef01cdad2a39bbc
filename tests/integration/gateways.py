"""Gateways for tests that wrap the real sandbox to pause or fail at an exact point.

They delegate every call to the sandbox (which records the charge in its own tables), so the
behaviour under test is the real one; the wrapper only decides *when* the call returns."""

from __future__ import annotations

import asyncio
from typing import Any

from strongroom.adapters.gateways.sandbox import SandboxGateway
from strongroom.domain.model import GatewayAnswer


class PausingGateway:
    """Holds every authorize until `resume` is set, and signals `entered` when one arrives."""

    name = "sandbox"

    def __init__(self, sandbox: SandboxGateway) -> None:
        self.sandbox = sandbox
        self.entered = asyncio.Event()
        self.resume = asyncio.Event()

    async def authorize(self, **kwargs: Any) -> GatewayAnswer:
        self.entered.set()
        await self.resume.wait()
        return await self.sandbox.authorize(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sandbox, name)


class CrashAfterCharge:
    """Charges through the sandbox, then fails the way a process dying mid-request would:
    with an unexpected exception, after the charge and before phase 2."""

    name = "sandbox"

    def __init__(self, sandbox: SandboxGateway) -> None:
        self.sandbox = sandbox

    async def authorize(self, **kwargs: Any) -> GatewayAnswer:
        await self.sandbox.authorize(**kwargs)
        raise RuntimeError("process died after the gateway charged")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sandbox, name)
