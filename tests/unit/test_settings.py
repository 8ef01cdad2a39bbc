"""Settings refuse to run production on default or weak secrets."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from strongroom.settings import InsecureConfiguration, Settings


def test_production_refuses_the_default_secret() -> None:
    with pytest.raises(InsecureConfiguration, match="STRONGROOM_SECRET_KEY"):
        Settings(env="production")


def test_production_refuses_a_short_secret() -> None:
    with pytest.raises(InsecureConfiguration):
        Settings(env="production", secret_key=SecretStr("short"))


def test_production_starts_with_a_strong_secret() -> None:
    settings = Settings(env="production", secret_key=SecretStr("x" * 40))
    assert settings.env == "production"


def test_settings_come_from_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRONGROOM_MAX_AMOUNT", "500")
    monkeypatch.setenv("STRONGROOM_DATABASE_URL", "postgresql+asyncpg://u@h/db")
    settings = Settings()
    assert settings.max_amount == 500
    assert not settings.is_sqlite


def test_the_secret_never_shows_in_repr() -> None:
    settings = Settings(secret_key=SecretStr("a-very-secret-value-of-some-length"))
    assert "a-very-secret" not in repr(settings)


def test_retention_below_24_hours_is_refused() -> None:
    with pytest.raises(ValueError, match="idempotency_retention_hours"):
        Settings(idempotency_retention_hours=23)


def test_production_refuses_loopback_webhooks() -> None:
    with pytest.raises(InsecureConfiguration, match="WEBHOOK_ALLOW_LOOPBACK"):
        Settings(env="production", secret_key=SecretStr("x" * 40), webhook_allow_loopback=True)
    assert Settings(env="development", webhook_allow_loopback=True).webhook_allow_loopback


def test_production_refuses_an_unenforced_policy() -> None:
    with pytest.raises(InsecureConfiguration, match="POLICY_ENFORCED"):
        Settings(env="production", secret_key=SecretStr("x" * 40), policy_enforced=False)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ratelimit_per_key", {"login": "1/second"}),  # keys have reads and writes only
        ("ratelimit_per_key", {"reads": "many"}),
        ("ratelimit_per_address", {"everything": "1/second"}),
    ],
)
def test_rate_limits_must_name_a_class_and_a_rate(field: str, value: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"route classes|not a rate"):
        Settings(**{field: value})
