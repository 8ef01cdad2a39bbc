"""The email port: how Strongroom sends operators their invitations.

`file://<directory>` (the development default, `./var/mail`) writes each message as an .eml file
there, for a developer to open; `smtp://[user:password@]host:port[?from=…&starttls=1]` sends it
through an SMTP server (the standard library's client, in a thread). Messages carry no secret
other than what they exist to deliver (an invitation link), and are never logged.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from abc import ABC, abstractmethod
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_FROM = "Strongroom <no-reply@strongroom.invalid>"


@dataclass(frozen=True)
class Message:
    to: str
    subject: str
    body: str  # plain text


class Mailer(ABC):
    def __init__(self, sender: str = DEFAULT_FROM) -> None:
        self.sender = sender

    def _compose(self, message: Message) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail["Message-ID"] = make_msgid(domain="strongroom.invalid")
        mail.set_content(message.body)
        return mail

    @abstractmethod
    async def send(self, message: Message) -> None: ...


class DirectoryMailer(Mailer):
    """Development: each message becomes `<directory>/<message id>.eml`."""

    def __init__(self, directory: Path, sender: str = DEFAULT_FROM) -> None:
        super().__init__(sender)
        self.directory = directory

    async def send(self, message: Message) -> None:
        mail = self._compose(message)
        name = str(mail["Message-ID"]).strip("<>").replace("@", "_").replace("/", "_")

        def write() -> None:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            (self.directory / f"{name}.eml").write_bytes(bytes(mail))

        await asyncio.to_thread(write)


class SmtpMailer(Mailer):
    def __init__(
        self,
        host: str,
        port: int,
        *,
        user: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        sender: str = DEFAULT_FROM,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(sender)
        self.host, self.port = host, port
        self._user, self._password = user, password
        self.starttls = starttls
        self.timeout = timeout

    async def send(self, message: Message) -> None:
        mail = self._compose(message)

        def deliver() -> None:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self._user is not None and self._password is not None:
                    smtp.login(self._user, self._password)
                smtp.send_message(mail)

        await asyncio.to_thread(deliver)


def mailer_from_url(url: str) -> Mailer:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    sender = query.get("from", [DEFAULT_FROM])[0]
    if parts.scheme == "file":
        return DirectoryMailer(Path(unquote(parts.netloc + parts.path)), sender)
    if parts.scheme == "smtp":
        return SmtpMailer(
            parts.hostname or "127.0.0.1",
            parts.port or 25,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            starttls=query.get("starttls", ["0"])[0] == "1",
            sender=sender,
        )
    raise ValueError(f"STRONGROOM_MAIL_URL must be file://… or smtp://…, not {url!r}")
