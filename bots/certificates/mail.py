"""The e-mail that carries a certificate and a badge, sent over SMTP with aiosmtplib.

`send_certificate_mail(settings, to, name, campaign, attachments, verify_url)` builds a
Vietnamese message (plain text and HTML, from the templates beside this module, escaped by
Jinja2), attaches the files byte for byte and hands it to the configured server. Every failure
is a `MailError` that says whether trying again later can help (`retry`):

- `MailUnreachable` (retry): the server cannot be reached, timed out or hung up;
- `MailRejected` (retry when the server's code is 4xx): the server refused the message;
  `MailRecipientRefused` when it refused the address (5xx: the address is wrong);
- `MailConfigError` (no retry until an operator fixes the settings): missing or wrong settings,
  refused login, a server without the TLS the settings demand, a certificate that does not verify.

Settings come from the environment (`SmtpSettings.from_env`): LOA_SMTP_HOST, LOA_SMTP_PORT,
LOA_SMTP_USER, LOA_SMTP_PASSWORD, LOA_SMTP_FROM, LOA_SMTP_TLS (none / starttls / ssl). The
password is never part of a repr or an error message.
"""

from __future__ import annotations

import enum
import os
import re
import ssl
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path
from typing import TYPE_CHECKING

import aiosmtplib
import jinja2
from email_validator import EmailNotValidError, validate_email

from bots.certificates.render import smart_quotes, tidy

if TYPE_CHECKING:
    from bots.certificates.render import RenderedCertificate

TEMPLATES = Path(__file__).parent / "templates"

# (filename, content, MIME type)
Attachment = tuple[str, bytes, str]

MAX_ATTACHMENTS_BYTES = 20 * 2**20  # most providers refuse messages above 20–25 MB


class TlsMode(enum.Enum):
    NONE = "none"  # plain SMTP (a relay on the same machine or network only)
    STARTTLS = "starttls"  # upgrade on the submission port (587); refuse a server without it
    SSL = "ssl"  # TLS from the first byte (465)


_DEFAULT_PORTS = {TlsMode.NONE: 25, TlsMode.STARTTLS: 587, TlsMode.SSL: 465}


class MailError(Exception):
    """Sending failed. `str(error)` is a Vietnamese sentence for organisers; `retry` tells
    whether sending the same message later can succeed; `code` is the server's reply code
    when it gave one; `detail` is what the server or the network said."""

    retry = True

    def __init__(self, message: str, *, code: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail


class MailUnreachable(MailError):
    """The server could not be reached, did not answer in time, or hung up."""

    retry = True


class MailRejected(MailError):
    """The server answered with a refusal: temporary (4xx, retry) or permanent (5xx)."""

    def __init__(self, message: str, *, code: int | None = None, detail: str = "") -> None:
        super().__init__(message, code=code, detail=detail)
        self.retry = code is not None and 400 <= code < 500


class MailRecipientRefused(MailRejected):
    """The recipient's address was refused (or is not an e-mail address at all)."""


class MailConfigError(MailError):
    """The SMTP settings are missing or wrong; nothing is sent until they are fixed."""

    retry = False


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """Where and how to send. `sender` is the From header ("Quận Đoàn Tân Phú
    <chungnhan@example.org>"); `user` and `password` only when the server wants a login."""

    host: str
    sender: str
    port: int = 587
    tls: TlsMode = TlsMode.STARTTLS
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SmtpSettings | None:
        """Settings from LOA_SMTP_* (`env`, default `os.environ`); None when LOA_SMTP_HOST is
        unset (e-mail is off). Raises `MailConfigError` for unusable values."""
        env = os.environ if env is None else env
        host = env.get("LOA_SMTP_HOST", "").strip()
        if not host:
            return None
        raw_tls = env.get("LOA_SMTP_TLS", "starttls").strip().lower() or "starttls"
        try:
            tls = TlsMode(raw_tls)
        except ValueError:
            raise MailConfigError(
                f"LOA_SMTP_TLS={raw_tls!r}: chỉ nhận none, starttls hoặc ssl."
            ) from None
        raw_port = env.get("LOA_SMTP_PORT", "").strip()
        if raw_port:
            if not raw_port.isdigit() or not 0 < int(raw_port) < 65536:
                raise MailConfigError(f"LOA_SMTP_PORT={raw_port!r}: cần một số cổng (1–65535).")
            port = int(raw_port)
        else:
            port = _DEFAULT_PORTS[tls]
        sender = env.get("LOA_SMTP_FROM", "").strip()
        if not sender:
            raise MailConfigError(
                "Thiếu LOA_SMTP_FROM (địa chỉ gửi, ví dụ: Quận Đoàn Tân Phú <chungnhan@...>)."
            )
        user = env.get("LOA_SMTP_USER", "").strip() or None
        password = env.get("LOA_SMTP_PASSWORD") or None
        if (user is None) != (password is None):
            raise MailConfigError("LOA_SMTP_USER và LOA_SMTP_PASSWORD phải có cả hai hoặc không.")
        settings = cls(host=host, sender=sender, port=port, tls=tls, user=user, password=password)
        settings.sender_address()  # fail now, at start-up, rather than on the first mail
        return settings

    def sender_address(self) -> tuple[str, str]:
        """The sender's display name and address; `MailConfigError` when it is not one."""
        display, address = parseaddr(self.sender)
        try:
            address = validate_email(address, check_deliverability=False).normalized
        except EmailNotValidError:
            raise MailConfigError(
                f"LOA_SMTP_FROM={self.sender!r} không phải một địa chỉ e-mail hợp lệ."
            ) from None
        return tidy(display), address


# -- the message ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Texts:
    subject: str
    text: str
    html: str


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
)


def subject_for(campaign: str) -> str:
    """The subject line: "Giấy chứng nhận – Thử thách “Công dân số” năm 2023"."""
    return f"Giấy chứng nhận – {smart_quotes(tidy(campaign))}"


def _describe(filename: str, mime: str) -> str:
    kind = {
        "application/pdf": "tệp PDF, in được",
        "image/png": "ảnh PNG",
        "image/jpeg": "ảnh JPEG",
    }.get(mime, "tệp đính kèm")
    return f"{filename} ({kind})"


def _texts(
    name: str, campaign: str, attachments: Sequence[Attachment], verify_url: str, sender: str
) -> _Texts:
    subject = subject_for(campaign)
    values = {
        "name": tidy(name),
        "campaign": smart_quotes(tidy(campaign)),
        "attachments": [_describe(filename, mime) for filename, _, mime in attachments],
        "verify_url": verify_url,
        "sender_name": sender or "Ban Tổ chức",
        "subject": subject,
    }
    return _Texts(
        subject=subject,
        text=_env.get_template("mail.txt").render(values),
        html=_env.get_template("mail.html").render(values),
    )


def build_message(
    settings: SmtpSettings,
    to: str,
    name: str,
    campaign: str,
    attachments: Sequence[Attachment],
    verify_url: str,
    *,
    organisation: str | None = None,
) -> EmailMessage:
    """The message `send_certificate_mail` sends (also for a preview in the console).
    `organisation` ("Quận Đoàn Tân Phú") is the sender's display name and the signature, when one
    SMTP account serves several districts; default: the display name of LOA_SMTP_FROM. Raises
    `MailRecipientRefused` for an address that is not one, `MailConfigError` for a bad sender,
    `ValueError` for a malformed attachment or verify URL."""
    display, sender = settings.sender_address()
    if organisation is not None and tidy(organisation):
        display = tidy(organisation)
    try:
        recipient = validate_email(to.strip(), check_deliverability=False).normalized
    except (EmailNotValidError, AttributeError):
        raise MailRecipientRefused(f"Địa chỉ e-mail {to!r} không hợp lệ.") from None
    if not re.fullmatch(r"https?://\S+", verify_url or ""):
        raise ValueError(f"verify_url {verify_url!r} is not an http(s) URL")
    total = 0
    for filename, content, mime in attachments:
        if not re.fullmatch(r"[\w.+-]+/[\w.+-]+", mime) or not filename or "/" in filename:
            raise ValueError(f"attachment {filename!r} ({mime!r}) is malformed")
        total += len(content)
    if total > MAX_ATTACHMENTS_BYTES:
        raise ValueError(f"attachments total {total} bytes, cap {MAX_ATTACHMENTS_BYTES}")

    texts = _texts(name, campaign, attachments, verify_url, display)
    message = EmailMessage()
    message["Subject"] = texts.subject
    username, domain = sender.rsplit("@", 1)
    message["From"] = Address(display_name=display, username=username, domain=domain)
    message["To"] = recipient
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=domain)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: autoresponders stay quiet
    message.set_content(texts.text, charset="utf-8")
    message.add_alternative(texts.html, subtype="html", charset="utf-8")
    for filename, content, mime in attachments:
        maintype, subtype = mime.split("/", 1)
        message.add_attachment(
            bytes(content), maintype=maintype, subtype=subtype, filename=filename
        )
    # After the body: set_content and add_attachment move Content-* headers into the parts.
    message["Content-Language"] = "vi"
    return message


def attachments_for(
    name: str,
    certificate: RenderedCertificate | None = None,
    badge_png: bytes | None = None,
    *,
    badge_title: str = "Công dân số",
    certificate_png: bool = False,
) -> list[Attachment]:
    """The usual attachments with ASCII file names made from the person's name:
    giay-chung-nhan-nguyen-van-an.pdf (and .png when `certificate_png`) and
    huy-hieu-cong-dan-so-nguyen-van-an.png."""
    slug = ascii_slug(name) or "nguoi-nhan"
    out: list[Attachment] = []
    if certificate is not None:
        out.append((f"giay-chung-nhan-{slug}.pdf", certificate.pdf, "application/pdf"))
        if certificate_png:
            out.append((f"giay-chung-nhan-{slug}.png", certificate.png, "image/png"))
    if badge_png is not None:
        badge = ascii_slug(badge_title) or "huy-hieu"
        out.append((f"huy-hieu-{badge}-{slug}.png", badge_png, "image/png"))
    return out


def ascii_slug(text: str, limit: int = 60) -> str:
    """ "Nguyễn Văn Ân" → "nguyen-van-an": file names every mail client shows the same."""
    plain = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    plain = "".join(c for c in plain if unicodedata.category(c) != "Mn").lower()
    return re.sub(r"[^a-z0-9]+", "-", plain).strip("-")[:limit].strip("-")


# -- sending -------------------------------------------------------------------------------------


async def send_certificate_mail(
    settings: SmtpSettings,
    to: str,
    name: str,
    campaign: str,
    attachments: Sequence[Attachment],
    verify_url: str,
    *,
    organisation: str | None = None,
) -> str:
    """Send the certificate e-mail to `to`; returns the Message-ID (for the record). Raises a
    `MailError` (`MailUnreachable`, `MailRejected`, `MailRecipientRefused`, `MailConfigError`),
    or `ValueError` for a malformed attachment or verify URL (a caller's bug)."""
    message = build_message(
        settings, to, name, campaign, attachments, verify_url, organisation=organisation
    )
    _, sender = settings.sender_address()
    try:
        await aiosmtplib.send(
            message,
            sender=sender,
            recipients=[str(message["To"])],
            hostname=settings.host,
            port=settings.port,
            username=settings.user,
            password=settings.password,
            use_tls=settings.tls is TlsMode.SSL,
            # False, not None: with None aiosmtplib upgrades only when offered; STARTTLS mode
            # must never fall back to sending the password and the files in clear.
            start_tls=settings.tls is TlsMode.STARTTLS,
            timeout=settings.timeout,
        )
    except Exception as error:  # every failure becomes one of ours, with its cause chained
        raise _classify(error, settings) from error
    return str(message["Message-ID"])


def _classify(error: Exception, settings: SmtpSettings) -> MailError:
    where = f"{settings.host}:{settings.port}"
    if isinstance(error, MailError):
        return error
    if isinstance(error, aiosmtplib.SMTPAuthenticationError):
        return MailConfigError(
            f"Máy chủ thư {where} từ chối đăng nhập: kiểm tra LOA_SMTP_USER và LOA_SMTP_PASSWORD.",
            code=error.code,
            detail=error.message,
        )
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        first = error.recipients[0] if error.recipients else None
        code = first.code if first is not None else None
        return MailRecipientRefused(
            "Máy chủ thư từ chối địa chỉ người nhận"
            + (" (tạm thời, sẽ thử lại)." if code and 400 <= code < 500 else "."),
            code=code,
            detail=first.message if first is not None else "",
        )
    if isinstance(error, aiosmtplib.SMTPRecipientRefused):
        return MailRecipientRefused(
            "Máy chủ thư từ chối địa chỉ người nhận.", code=error.code, detail=error.message
        )
    if isinstance(error, aiosmtplib.SMTPSenderRefused) and error.code >= 500:
        return MailConfigError(
            f"Máy chủ thư không cho gửi từ {error.sender}: kiểm tra LOA_SMTP_FROM.",
            code=error.code,
            detail=error.message,
        )
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return MailRejected(
            f"Máy chủ thư {where} từ chối thư (mã {error.code}).",
            code=error.code,
            detail=error.message,
        )
    if isinstance(error, aiosmtplib.SMTPNotSupported) or type(error) is aiosmtplib.SMTPException:
        # The plain class: what the settings ask for is not on offer ("SMTP STARTTLS extension
        # not supported by server", no usable AUTH mechanism). Retrying cannot help.
        return MailConfigError(
            f"Máy chủ thư {where} không hỗ trợ điều cấu hình yêu cầu ({error.message}); "
            "kiểm tra LOA_SMTP_TLS và LOA_SMTP_PORT.",
            detail=error.message,
        )
    if isinstance(error, ssl.SSLCertVerificationError) or isinstance(
        error.__cause__, ssl.SSLCertVerificationError
    ):
        return MailConfigError(
            f"Chứng chỉ TLS của máy chủ thư {where} không hợp lệ.", detail=str(error)
        )
    if isinstance(error, ssl.SSLError) or isinstance(error.__cause__, ssl.SSLError):
        return MailConfigError(
            f"Không bắt tay TLS được với {where}: kiểm tra LOA_SMTP_TLS và LOA_SMTP_PORT.",
            detail=str(error),
        )
    if isinstance(error, (aiosmtplib.SMTPException, OSError, TimeoutError)):
        return MailUnreachable(
            f"Không kết nối được máy chủ thư {where}; sẽ thử gửi lại sau.", detail=str(error)
        )
    return MailError(f"Gửi thư qua {where} thất bại: {type(error).__name__}.", detail=str(error))


__all__ = [
    "Attachment",
    "MailConfigError",
    "MailError",
    "MailRecipientRefused",
    "MailRejected",
    "MailUnreachable",
    "SmtpSettings",
    "TlsMode",
    "ascii_slug",
    "attachments_for",
    "build_message",
    "send_certificate_mail",
    "subject_for",
]
