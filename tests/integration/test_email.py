"""The email port: the SMTP adapter against a real SMTP server (aiosmtpd, in a thread, on a
free port), and the development adapter's .eml files."""

from __future__ import annotations

from collections.abc import Iterator
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from strongroom.adapters.email import DirectoryMailer, Message, SmtpMailer, mailer_from_url
from tests.e2e.server import free_port

MESSAGE = Message(to="ops@example.com", subject="Hello", body="A link: https://x.example/a\n")


class Inbox:
    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((envelope.mail_from, envelope.rcpt_tos, envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


async def test_smtp_delivers_the_message(smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    mailer = mailer_from_url(f"smtp://127.0.0.1:{port}?from=Ops%20<ops@strongroom.example>")
    assert isinstance(mailer, SmtpMailer)
    await mailer.send(MESSAGE)
    [(sender, recipients, content)] = inbox.received
    assert recipients == ["ops@example.com"]
    assert sender == "ops@strongroom.example"
    mail = message_from_bytes(content, policy=default)
    assert mail["Subject"] == "Hello"
    body = mail.get_body(("plain",))
    assert body is not None
    assert "https://x.example/a" in body.get_content()


async def test_the_development_mailer_writes_eml_files(tmp_path: Path) -> None:
    mailer = mailer_from_url(f"file://{tmp_path / 'mail'}")
    assert isinstance(mailer, DirectoryMailer)
    await mailer.send(MESSAGE)
    [written] = (tmp_path / "mail").glob("*.eml")
    assert message_from_bytes(written.read_bytes(), policy=default)["To"] == "ops@example.com"
    assert (tmp_path / "mail").stat().st_mode & 0o077 == 0, "only the owner reads the mail"


def test_unknown_mail_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="STRONGROOM_MAIL_URL"):
        mailer_from_url("ftp://mail.example")
