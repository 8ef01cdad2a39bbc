"""What the operator tests share: the Operators service with cheap argon2 parameters (these
tests count attempts and rules, not the cost of a hash)."""

from __future__ import annotations

from strongroom.bootstrap import Container
from strongroom.domain.clock import Clock
from strongroom.service_layer.login_throttle import LoginThrottle
from strongroom.service_layer.operators import Operators
from strongroom.service_layer.passwords import Argon2Parameters, Passwords

FAST = Argon2Parameters(time_cost=1, memory_kib=8, parallelism=1)
PASSWORD = "Gl4cier-kettle-Orbit-77"


def fast_operators(
    container: Container, clock: Clock, throttle: LoginThrottle | None = None
) -> Operators:
    return Operators(container.uow, clock, Passwords(FAST), container.audit, throttle=throttle)
