"""Certificate test fixtures: sample data, one renderer pool for the run, a real SMTP server.

The SMTP server is aiosmtpd's `Controller` on a free 127.0.0.1 port: it speaks real SMTP to
aiosmtplib and keeps every envelope it accepted. Nothing here reaches the internet.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope

from bots.certificates.render import CertificateData, CertificateRenderer
from bots.supervisor import free_port

VERIFY_URL = "https://loa.example.vn/verify/CDS-2023-000123-K7Q4XM"


def certificate_data(**changes: Any) -> CertificateData:
    values: dict[str, Any] = {
        "name": "Nguyễn Văn An",
        "unit": "Đoàn phường Hòa Thạnh",
        "campaign": 'Thử thách "Công dân số" năm 2023',
        "issued_on": dt.date(2023, 10, 15),
        "organisation": "Quận Đoàn Tân Phú",
        "serial": "CDS-2023-000123-K7Q4XM",
        "verify_url": VERIFY_URL,
        "signer_title": "TM. BAN THƯỜNG VỤ QUẬN ĐOÀN\nBÍ THƯ",
        "signer_name": "Trần Thị Minh Thư",
    }
    values.update(changes)
    return CertificateData(**values)


@pytest.fixture(scope="session")
def renderer() -> Iterator[CertificateRenderer]:
    """One pool for the whole run (starting worker processes is the slow part)."""
    pool = CertificateRenderer(workers=1)
    yield pool
    pool.shutdown()


@dataclass
class Mailbox:
    """What the local SMTP server received, and how it should answer."""

    port: int = 0
    envelopes: list[Envelope] = field(default_factory=list)
    refuse_rcpt: str | None = None  # e.g. "550 5.1.1 No such user"
    logins: dict[str, str] = field(default_factory=dict)  # user → password it accepts

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.refuse_rcpt:
            return self.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def authenticate(
        self, server: Any, session: Any, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        login = data.login.decode() if isinstance(data.login, bytes) else data.login
        password = data.password.decode() if isinstance(data.password, bytes) else data.password
        ok = self.logins.get(login) == password
        # handled=False: aiosmtpd answers 535 itself on a failure.
        return AuthResult(success=ok, handled=False)


def _serve(mailbox: Mailbox, **kwargs: Any) -> Iterator[Mailbox]:
    mailbox.port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=mailbox.port, **kwargs)
    controller.start()
    try:
        yield mailbox
    finally:
        controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[Mailbox]:
    yield from _serve(Mailbox())


@pytest.fixture
def smtp_server_with_login() -> Iterator[Mailbox]:
    mailbox = Mailbox(logins={"chungnhan": "mật-khẩu-đúng"})
    yield from _serve(mailbox, authenticator=mailbox.authenticate, auth_require_tls=False)
