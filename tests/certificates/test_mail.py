"""The certificate e-mail through a real SMTP server on 127.0.0.1 (aiosmtpd): Vietnamese subject
and body, both attachments byte for byte, login, and every failure as a clear, classified error."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator
from email.message import EmailMessage

import pytest

from bots.certificates.mail import (
    MailConfigError,
    MailError,
    MailRecipientRefused,
    MailRejected,
    MailUnreachable,
    SmtpSettings,
    TlsMode,
    ascii_slug,
    attachments_for,
    build_message,
    send_certificate_mail,
)
from bots.certificates.render import BadgeData, RenderedCertificate, render_badge
from bots.supervisor import free_port
from tests.certificates.conftest import VERIFY_URL, Mailbox

CAMPAIGN = 'Thử thách "Công dân số" năm 2023'
SUBJECT = "Giấy chứng nhận – Thử thách “Công dân số” năm 2023"
SENDER = "Quận Đoàn Tân Phú <chungnhan@quandoan.example.org>"


def settings(port: int, **changes: object) -> SmtpSettings:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "sender": SENDER,
        "tls": TlsMode.NONE,
        "timeout": 5.0,
    }
    values.update(changes)
    return SmtpSettings(**values)  # type: ignore[arg-type]


def files() -> list[tuple[str, bytes, str]]:
    # Bytes of every value, so a re-encoding (line endings, charset) would show.
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\r\n\x00%%EOF\n"
    badge = render_badge(BadgeData(name="Nguyễn Văn An", year=2023))
    certificate = RenderedCertificate(png=b"unused", pdf=pdf)
    return attachments_for("Nguyễn Văn Ân", certificate, badge)


def received(mailbox: Mailbox) -> EmailMessage:
    assert len(mailbox.envelopes) == 1
    envelope = mailbox.envelopes[0]
    raw = envelope.original_content or envelope.content
    assert isinstance(raw, bytes)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


async def test_the_mail_arrives_with_subject_body_and_attachments(smtp_server: Mailbox) -> None:
    attachments = files()
    message_id = await send_certificate_mail(
        settings(smtp_server.port),
        "an.nguyen@example.com",
        "Nguyễn Văn Ân",
        CAMPAIGN,
        attachments,
        VERIFY_URL,
    )
    envelope = smtp_server.envelopes[0]
    assert envelope.rcpt_tos == ["an.nguyen@example.com"]
    assert envelope.mail_from == "chungnhan@quandoan.example.org"

    message = received(smtp_server)
    assert message["Subject"] == SUBJECT
    assert message["To"] == "an.nguyen@example.com"
    assert message["From"].addresses[0].display_name == "Quận Đoàn Tân Phú"
    assert message["Message-ID"] == message_id
    assert message["Content-Language"] == "vi"
    # Headers travel encoded (RFC 2047), never as raw 8-bit.
    raw = envelope.original_content or envelope.content
    assert isinstance(raw, bytes)
    header_block = raw.split(b"\r\n\r\n", 1)[0]
    assert header_block.isascii()

    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    plain = text.get_content()
    assert "Chào Nguyễn Văn Ân," in plain
    assert "Thử thách “Công dân số” năm 2023" in plain
    assert VERIFY_URL in plain
    assert f'href="{VERIFY_URL}"' in html.get_content()

    got = [
        (part.get_filename(), part.get_payload(decode=True), part.get_content_type())
        for part in message.iter_attachments()
    ]
    assert got == attachments
    assert [name for name, _, _ in got] == [
        "giay-chung-nhan-nguyen-van-an.pdf",
        "huy-hieu-cong-dan-so-nguyen-van-an.png",
    ]


async def test_names_are_escaped_in_the_html(smtp_server: Mailbox) -> None:
    await send_certificate_mail(
        settings(smtp_server.port),
        "an@example.com",
        "<script>alert(1)</script> An",
        CAMPAIGN,
        [],
        VERIFY_URL,
    )
    html = received(smtp_server).get_body(preferencelist=("html",))
    assert html is not None
    content = html.get_content()
    assert "<script>" not in content
    assert "&lt;script&gt;" in content


async def test_organisation_overrides_the_sender_name(smtp_server: Mailbox) -> None:
    await send_certificate_mail(
        settings(smtp_server.port, sender="Loa <loa@example.org>"),
        "an@example.com",
        "An",
        CAMPAIGN,
        [],
        VERIFY_URL,
        organisation="Huyện Đoàn Sốp Cộp",
    )
    message = received(smtp_server)
    assert message["From"].addresses[0].display_name == "Huyện Đoàn Sốp Cộp"
    body = message.get_body(preferencelist=("plain",))
    assert body is not None and "Huyện Đoàn Sốp Cộp chúc mừng" in body.get_content()


async def test_login_with_the_right_password(smtp_server_with_login: Mailbox) -> None:
    await send_certificate_mail(
        settings(smtp_server_with_login.port, user="chungnhan", password="mật-khẩu-đúng"),
        "an@example.com",
        "An",
        CAMPAIGN,
        [],
        VERIFY_URL,
    )
    assert len(smtp_server_with_login.envelopes) == 1


async def test_a_refused_login_is_a_configuration_error(smtp_server_with_login: Mailbox) -> None:
    with pytest.raises(MailConfigError) as caught:
        await send_certificate_mail(
            settings(smtp_server_with_login.port, user="chungnhan", password="sai"),
            "an@example.com",
            "An",
            CAMPAIGN,
            [],
            VERIFY_URL,
        )
    assert caught.value.retry is False
    assert caught.value.code == 535
    assert "LOA_SMTP_PASSWORD" in str(caught.value)
    assert "sai" not in str(caught.value)
    assert smtp_server_with_login.envelopes == []


async def test_an_unreachable_server_is_retryable() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(MailUnreachable) as caught:
        await send_certificate_mail(
            settings(port), "an@example.com", "An", CAMPAIGN, files(), VERIFY_URL
        )
    assert caught.value.retry is True
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert isinstance(caught.value, MailError)


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """Accepts connections and never says a word."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_a_server_that_never_answers_times_out_as_unreachable(silent_server: int) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(MailUnreachable):
        await send_certificate_mail(
            settings(silent_server, timeout=0.5), "an@example.com", "An", CAMPAIGN, [], VERIFY_URL
        )
    assert loop.time() - started < 3


@pytest.mark.parametrize(
    ("reply", "retry"), [("550 5.1.1 No such user", False), ("450 4.2.1 Mailbox busy", True)]
)
async def test_a_refused_recipient(smtp_server: Mailbox, reply: str, retry: bool) -> None:
    smtp_server.refuse_rcpt = reply
    with pytest.raises(MailRecipientRefused) as caught:
        await send_certificate_mail(
            settings(smtp_server.port), "nobody@example.com", "An", CAMPAIGN, [], VERIFY_URL
        )
    assert isinstance(caught.value, MailRejected)
    assert caught.value.retry is retry
    assert caught.value.code == int(reply[:3])
    assert smtp_server.envelopes == []


async def test_starttls_is_never_skipped(smtp_server: Mailbox) -> None:
    """A server that does not offer STARTTLS gets nothing when the settings demand it."""
    with pytest.raises(MailConfigError, match="LOA_SMTP_TLS"):
        await send_certificate_mail(
            settings(smtp_server.port, tls=TlsMode.STARTTLS),
            "an@example.com",
            "An",
            CAMPAIGN,
            files(),
            VERIFY_URL,
        )
    assert smtp_server.envelopes == []


async def test_ssl_against_a_plain_server_is_a_configuration_error(smtp_server: Mailbox) -> None:
    with pytest.raises(MailConfigError):
        await send_certificate_mail(
            settings(smtp_server.port, tls=TlsMode.SSL),
            "an@example.com",
            "An",
            CAMPAIGN,
            [],
            VERIFY_URL,
        )
    assert smtp_server.envelopes == []


async def test_an_invalid_address_is_refused_before_connecting() -> None:
    port = free_port()  # nothing listens: reaching it would be MailUnreachable
    for address in ("not-an-address", "a@b@c", "an@example.com\r\nBcc: x@example.com"):
        with pytest.raises(MailRecipientRefused) as caught:
            await send_certificate_mail(settings(port), address, "An", CAMPAIGN, [], VERIFY_URL)
        assert caught.value.retry is False


def test_build_message_refuses_malformed_attachments() -> None:
    with pytest.raises(ValueError, match="malformed"):
        build_message(
            settings(25), "a@example.com", "An", CAMPAIGN, [("x.pdf", b"1", "pdf")], VERIFY_URL
        )
    with pytest.raises(ValueError, match="verify_url"):
        build_message(settings(25), "a@example.com", "An", CAMPAIGN, [], "ftp://x")


# -- settings from the environment -------------------------------------------------------------


def test_settings_from_env() -> None:
    env = {
        "LOA_SMTP_HOST": "smtp.example.org",
        "LOA_SMTP_USER": "chungnhan",
        "LOA_SMTP_PASSWORD": "bí-mật",
        "LOA_SMTP_FROM": SENDER,
        "LOA_SMTP_TLS": "SSL",
    }
    loaded = SmtpSettings.from_env(env)
    assert loaded is not None
    assert (loaded.host, loaded.port, loaded.tls) == ("smtp.example.org", 465, TlsMode.SSL)
    assert (loaded.user, loaded.password, loaded.sender) == ("chungnhan", "bí-mật", SENDER)
    assert "bí-mật" not in repr(loaded)
    for tls, port, expected in (("", "", 587), ("starttls", "", 587), ("none", "2525", 2525)):
        variant = SmtpSettings.from_env({**env, "LOA_SMTP_TLS": tls, "LOA_SMTP_PORT": port})
        assert variant is not None and variant.port == expected
    variant = SmtpSettings.from_env({**env, "LOA_SMTP_TLS": ""})
    assert variant is not None and variant.tls is TlsMode.STARTTLS


def test_no_host_means_mail_is_off() -> None:
    assert SmtpSettings.from_env({}) is None
    assert SmtpSettings.from_env({"LOA_SMTP_HOST": "  ", "LOA_SMTP_FROM": SENDER}) is None


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"LOA_SMTP_TLS": "tls"}, "LOA_SMTP_TLS"),
        ({"LOA_SMTP_PORT": "http"}, "LOA_SMTP_PORT"),
        ({"LOA_SMTP_PORT": "70000"}, "LOA_SMTP_PORT"),
        ({"LOA_SMTP_FROM": ""}, "LOA_SMTP_FROM"),
        ({"LOA_SMTP_FROM": "Quận Đoàn <không phải địa chỉ>"}, "LOA_SMTP_FROM"),
        ({"LOA_SMTP_PASSWORD": ""}, "LOA_SMTP_USER"),
    ],
)
def test_bad_settings_are_refused(changes: dict[str, str], fragment: str) -> None:
    env = {
        "LOA_SMTP_HOST": "smtp.example.org",
        "LOA_SMTP_USER": "chungnhan",
        "LOA_SMTP_PASSWORD": "x",
        "LOA_SMTP_FROM": SENDER,
    }
    env.update(changes)
    with pytest.raises(MailConfigError, match=fragment):
        SmtpSettings.from_env(env)


def test_ascii_file_names() -> None:
    assert ascii_slug("Nguyễn Văn Ân") == "nguyen-van-an"
    assert ascii_slug("Đặng Thị Ửng") == "dang-thi-ung"
    assert ascii_slug("🌸🌸") == ""
    assert attachments_for("🌸", None, b"x")[0][0] == "huy-hieu-cong-dan-so-nguoi-nhan.png"
