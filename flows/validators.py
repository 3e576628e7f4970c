"""One parse function per `ExpectKind`: an inbound message → a stored value, or why not.

Phone numbers go through `phonenumbers` (region VN, stored as E.164) and e-mail addresses through
`email-validator` (syntax only, no DNS): no hand-written regexes for either.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from flows.schema import Expect, ExpectKind
from flows.text import match_choice, match_unit, match_yes_no
from flows.vocab import Attachment, Inbound, InboundKind


class Reason(enum.Enum):
    EMPTY = "empty"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    NOT_NUMBER = "not_number"
    OUT_OF_RANGE = "out_of_range"
    BAD_EMAIL = "bad_email"
    BAD_PHONE = "bad_phone"
    BAD_CCCD = "bad_cccd"
    BAD_CCCD_PROVINCE = "bad_cccd_province"
    BAD_DATE = "bad_date"
    DATE_OUT_OF_RANGE = "date_out_of_range"
    NO_CHOICE = "no_choice"
    NOT_YES_NO = "not_yes_no"
    UNIT_AMBIGUOUS = "unit_ambiguous"
    UNIT_UNKNOWN = "unit_unknown"
    # The message is of the wrong kind altogether.
    STICKER = "sticker"  # stickers, likes, GIFs: never an answer
    TEXT_NOT_MEDIA = "text_not_media"  # text where an image/file is expected
    NOT_IMAGE = "not_image"  # a file that is not an image where an image is expected
    MEDIA_NOT_TEXT = "media_not_text"  # an image/file where text or a choice is expected
    LOCATION = "location"
    UNSUPPORTED = "unsupported"


# Reasons where Loa's own message wins over a step's `retry:` text: the organiser's retry text
# explains the expected format, but when the person sent a sticker or a photo instead of text,
# saying exactly that is clearer. Ambiguous units need the suggestions message.
KIND_MISMATCH = frozenset(
    {
        Reason.STICKER,
        Reason.TEXT_NOT_MEDIA,
        Reason.NOT_IMAGE,
        Reason.MEDIA_NOT_TEXT,
        Reason.LOCATION,
        Reason.UNSUPPORTED,
        Reason.UNIT_AMBIGUOUS,
    }
)

TEXT_MAX = 1000  # default upper bound of a text answer (keeps sessions and records sane)


@dataclass(frozen=True, slots=True)
class Valid:
    value: str  # what is stored (E.164 phone, ISO date, unit slug, "có"/"không", …)
    extra: Any = None  # Attachment for media, unit name, bool for yes/no, option index


@dataclass(frozen=True, slots=True)
class Invalid:
    reason: Reason
    suggestions: tuple[tuple[str, str], ...] = ()  # unit (slug, name) candidates


Result = Valid | Invalid

YES_VALUE = "có"
NO_VALUE = "không"

# First three digits of a citizen-id number: the province of birth registration
# (Circular 07/2016/TT-BCA, 63 provinces).
_PROVINCES = (
    "001 002 004 006 008 010 011 012 014 015 017 019 020 022 024 025 026 027 030 031 033 034 "
    "035 036 037 038 040 042 044 045 046 048 049 051 052 054 056 058 060 062 064 066 067 068 "
    "070 072 074 075 077 079 080 082 083 084 086 087 089 091 092 093 094 095 096"
)
PROVINCE_CODES = frozenset(_PROVINCES.split())

_CCCD_SEPARATORS = re.compile(r"[\s.\-]")
_DMY = re.compile(r"^(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{4})$")
_YMD = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
_THOUSANDS = re.compile(r"^-?\d{1,3}(\.\d{3})+$")
_PHONE_TYPES = frozenset(
    {
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    }
)


def _wrong_kind(inbound: Inbound) -> Invalid | None:
    """Why a non-text message cannot answer a question that wants text (or a choice)."""
    kind = inbound.kind
    if kind is InboundKind.STICKER:
        return Invalid(Reason.STICKER)
    if kind in (InboundKind.IMAGE, InboundKind.FILE):
        return Invalid(Reason.MEDIA_NOT_TEXT)
    if kind is InboundKind.LOCATION:
        return Invalid(Reason.LOCATION)
    if kind in (InboundKind.TEXT, InboundKind.CHOICE, InboundKind.CONTACT):
        return None
    return Invalid(Reason.UNSUPPORTED)


def parse_text(expect: Expect, text: str) -> Result:
    value = text.strip()
    if not value:
        return Invalid(Reason.EMPTY)
    if expect.min is not None and len(value) < expect.min:
        return Invalid(Reason.TOO_SHORT)
    if len(value) > (expect.max if expect.max is not None else TEXT_MAX):
        return Invalid(Reason.TOO_LONG)
    return Valid(value)


def parse_number(expect: Expect, text: str) -> Result:
    raw = text.strip().replace(" ", "")
    if not raw:
        return Invalid(Reason.EMPTY)
    # Vietnamese writes 1.000,5: a dot groups thousands, a comma is the decimal mark.
    if "," in raw:
        raw = raw.replace(".", "").replace(",", ".")
    elif _THOUSANDS.match(raw):
        raw = raw.replace(".", "")
    try:
        number = float(raw)
    except ValueError:
        return Invalid(Reason.NOT_NUMBER)
    if number != number or number in (float("inf"), float("-inf")):
        return Invalid(Reason.NOT_NUMBER)
    if (expect.min is not None and number < expect.min) or (
        expect.max is not None and number > expect.max
    ):
        return Invalid(Reason.OUT_OF_RANGE)
    value = str(int(number)) if number.is_integer() else repr(number)
    return Valid(value, number)


def parse_email(text: str) -> Result:
    raw = text.strip()
    if not raw:
        return Invalid(Reason.EMPTY)
    try:
        info = validate_email(raw, check_deliverability=False)
    except EmailNotValidError:
        return Invalid(Reason.BAD_EMAIL)
    return Valid(info.normalized)


def parse_phone(text: str) -> Result:
    raw = text.strip()
    if not raw:
        return Invalid(Reason.EMPTY)
    if len(raw) > 32:
        return Invalid(Reason.BAD_PHONE)
    digits = raw.replace(" ", "").replace(".", "").replace("-", "")
    if (
        digits.isascii()
        and digits.isdigit()
        and 9 <= len(digits) <= 11
        and digits[:2] != "00"
        and digits[0] == "0"
    ):
        # The usual local form "0912345678": skip the general parser (the costly part on the hot
        # path); validity still comes from phonenumbers' metadata below.
        number = phonenumbers.PhoneNumber(country_code=84, national_number=int(digits[1:]))
    else:
        try:
            number = phonenumbers.parse(raw, "VN")
        except phonenumbers.NumberParseException:
            return Invalid(Reason.BAD_PHONE)
    # number_type is UNKNOWN for any number that is not valid, so it checks validity too.
    if number.country_code != 84 or phonenumbers.number_type(number) not in _PHONE_TYPES:
        return Invalid(Reason.BAD_PHONE)
    return Valid(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def parse_cccd(text: str) -> Result:
    raw = _CCCD_SEPARATORS.sub("", text)
    if not raw:
        return Invalid(Reason.EMPTY)
    if len(raw) != 12 or not raw.isascii() or not raw.isdigit():
        return Invalid(Reason.BAD_CCCD)
    if raw[:3] not in PROVINCE_CODES:
        return Invalid(Reason.BAD_CCCD_PROVINCE)
    return Valid(raw)


def parse_date(expect: Expect, text: str) -> Result:
    raw = text.strip()
    if not raw:
        return Invalid(Reason.EMPTY)
    m = _DMY.match(raw)
    if m:
        day, month, year = int(m[1]), int(m[2]), int(m[3])
    else:
        m = _YMD.match(raw)
        if not m:
            return Invalid(Reason.BAD_DATE)
        year, month, day = int(m[1]), int(m[2]), int(m[3])
    try:
        value = date(year, month, day)
    except ValueError:
        return Invalid(Reason.BAD_DATE)
    if (expect.min_date is not None and value < expect.min_date) or (
        expect.max_date is not None and value > expect.max_date
    ):
        return Invalid(Reason.DATE_OUT_OF_RANGE)
    return Valid(value.isoformat(), value)


def parse_choice(expect: Expect, text: str) -> Result:
    index = match_choice(text, expect.options)
    if index is None:
        return Invalid(Reason.NO_CHOICE if text.strip() else Reason.EMPTY)
    return Valid(expect.options[index], index)


def parse_yes_no(text: str, titles: Sequence[str] = ()) -> Result:
    """Yes/no from synonyms, or from the question's own two button titles (yes first)."""
    answer = match_yes_no(text)
    if answer is None and titles:
        index = match_choice(text, titles)
        if index is not None:
            answer = index == 0
    if answer is None:
        return Invalid(Reason.NOT_YES_NO if text.strip() else Reason.EMPTY)
    return Valid(YES_VALUE if answer else NO_VALUE, answer)


def parse_unit(text: str, units: Sequence[tuple[str, str]]) -> Result:
    if not text.strip():
        return Invalid(Reason.EMPTY)
    found = match_unit(text, units)
    if found.unit is not None:
        return Valid(found.unit[0], found.unit[1])
    if found.suggestions:
        return Invalid(Reason.UNIT_AMBIGUOUS, found.suggestions)
    return Invalid(Reason.UNIT_UNKNOWN)


def attachment_ref(attachment: Attachment) -> str:
    """A short stable reference to stored media, for the session and placeholders."""
    return (
        attachment.sha256
        or attachment.unique_id
        or attachment.file_id
        or attachment.url
        or attachment.name
        or ""
    )


def parse_media(expect: Expect, inbound: Inbound) -> Result:
    kind = inbound.kind
    want_image = expect.kind is ExpectKind.IMAGE
    if kind is InboundKind.STICKER:
        return Invalid(Reason.STICKER)
    if kind in (InboundKind.TEXT, InboundKind.CHOICE, InboundKind.CONTACT):
        return Invalid(Reason.TEXT_NOT_MEDIA)
    if kind is InboundKind.LOCATION:
        return Invalid(Reason.LOCATION)
    if kind not in (InboundKind.IMAGE, InboundKind.FILE) or not inbound.attachments:
        return Invalid(Reason.UNSUPPORTED)
    attachment = inbound.attachments[0]
    # Telegram sends uncompressed photos as documents: a file whose mime is image/* is an image.
    if want_image and kind is InboundKind.FILE and not attachment.mime.startswith("image/"):
        return Invalid(Reason.NOT_IMAGE)
    return Valid(attachment_ref(attachment), attachment)


def _contact_text(inbound: Inbound) -> str:
    for key, value in inbound.data:
        if key in ("phone", "phone_number"):
            return value
    return inbound.text


_TEXT_PARSERS: dict[ExpectKind, Callable[[Expect, str], Result]] = {
    ExpectKind.TEXT: parse_text,
    ExpectKind.NUMBER: parse_number,
    ExpectKind.EMAIL: lambda _e, t: parse_email(t),
    ExpectKind.PHONE: lambda _e, t: parse_phone(t),
    ExpectKind.CCCD: lambda _e, t: parse_cccd(t),
    ExpectKind.DATE: parse_date,
    ExpectKind.CHOICE: parse_choice,
    ExpectKind.YES_NO: lambda e, t: parse_yes_no(t, e.options[:2]),
}


def validate(expect: Expect, inbound: Inbound, units: Sequence[tuple[str, str]] = ()) -> Result:
    """Parse `inbound` as the answer `expect` wants: `Valid(value, extra)` or `Invalid(reason)`.

    A CONTACT answers a phone question (the shared number is in `text` or data["phone"]); for
    any other kind a contact is read as its text."""
    kind = expect.kind
    if kind is ExpectKind.IMAGE or kind is ExpectKind.FILE:
        return parse_media(expect, inbound)
    wrong = _wrong_kind(inbound)
    if wrong is not None:
        return wrong
    text = _contact_text(inbound) if inbound.kind is InboundKind.CONTACT else inbound.text
    if kind is ExpectKind.UNIT:
        return parse_unit(text, units)
    return _TEXT_PARSERS[kind](expect, text)


__all__ = [
    "KIND_MISMATCH",
    "NO_VALUE",
    "PROVINCE_CODES",
    "TEXT_MAX",
    "YES_VALUE",
    "Invalid",
    "Reason",
    "Result",
    "Valid",
    "attachment_ref",
    "parse_cccd",
    "parse_choice",
    "parse_date",
    "parse_email",
    "parse_media",
    "parse_number",
    "parse_phone",
    "parse_text",
    "parse_unit",
    "parse_yes_no",
    "validate",
]
