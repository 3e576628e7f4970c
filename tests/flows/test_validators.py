from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from flows import messages
from flows.schema import Expect, ExpectKind
from flows.validators import (
    KIND_MISMATCH,
    Invalid,
    Reason,
    Valid,
    validate,
)
from flows.vocab import Attachment, Channel, Inbound, InboundKind

UNITS = [
    ("hoa-thanh", "Đoàn phường Hòa Thạnh"),
    ("phu-thanh", "Đoàn phường Phú Thạnh"),
    ("tan-thanh", "Đoàn phường Tân Thành"),
]


def inbound(kind: InboundKind = InboundKind.TEXT, **fields: Any) -> Inbound:
    return Inbound(
        district="d",
        channel=Channel.CONSOLE,
        user_id="u",
        kind=kind,
        message_id="m",
        timestamp=datetime(2024, 1, 1, tzinfo=UTC),
        **fields,
    )


def check(expect: Any, text: str) -> Valid | Invalid:
    return validate(Expect.model_validate(expect), inbound(text=text), UNITS)


@pytest.mark.parametrize(
    ("text", "e164"),
    [
        ("0912345678", "+84912345678"),
        ("+84 91 234 5678", "+84912345678"),
        ("84912345678", "+84912345678"),
        ("091.234.5678", "+84912345678"),
        ("0912-345-678", "+84912345678"),
        ("0387654321", "+84387654321"),
        ("02838123456", "+842838123456"),  # a Hồ Chí Minh City landline
    ],
)
def test_vietnamese_phone_numbers_normalise_to_e164(text: str, e164: str) -> None:
    assert check("phone", text) == Valid(e164)


@pytest.mark.parametrize(
    "text",
    [
        "091234567",
        "09123456789",
        "0112345678",
        "12345",
        "số của mình",
        "+1 650 253 0000",
        "",
        "0" * 40,
    ],
)
def test_invalid_phone_numbers(text: str) -> None:
    result = check("phone", text)
    assert isinstance(result, Invalid)
    assert result.reason in (Reason.BAD_PHONE, Reason.EMPTY)


def test_contact_answers_a_phone_question() -> None:
    contact = inbound(InboundKind.CONTACT, data=(("phone", "+84912345678"),))
    assert validate(Expect(kind=ExpectKind.PHONE), contact) == Valid("+84912345678")


@pytest.mark.parametrize(
    ("text", "value"),
    [("an.nguyen@gmail.com", "an.nguyen@gmail.com"), ("  ten@DONVI.VN ", "ten@donvi.vn")],
)
def test_valid_emails(text: str, value: str) -> None:
    assert check("email", text) == Valid(value)


@pytest.mark.parametrize("text", ["an.nguyen@", "an nguyen@gmail.com", "gmail.com", "a@b", "@x.vn"])
def test_invalid_emails(text: str) -> None:
    assert check("email", text) == Invalid(Reason.BAD_EMAIL)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("079203001234", "079203001234"),
        ("079 203 001 234", "079203001234"),
        ("001.099.123.456", "001099123456"),
    ],
)
def test_valid_cccd(text: str, value: str) -> None:
    assert check("cccd", text) == Valid(value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("07920300123", Reason.BAD_CCCD),  # 11 digits
        ("0792030012345", Reason.BAD_CCCD),
        ("07920300123a", Reason.BAD_CCCD),
        ("097203001234", Reason.BAD_CCCD_PROVINCE),  # 097 is no province
        ("003203001234", Reason.BAD_CCCD_PROVINCE),  # 003 is unassigned
    ],
)
def test_invalid_cccd(text: str, reason: Reason) -> None:
    assert check("cccd", text) == Invalid(reason)


@pytest.mark.parametrize(
    "text",
    ["5/9/2003", "05-09-2003", "5.9.2003", "2003-09-05", "05/09/2003"],
)
def test_dates_are_stored_iso(text: str) -> None:
    result = check("date", text)
    assert isinstance(result, Valid)
    assert result.value == "2003-09-05"


@pytest.mark.parametrize("text", ["31/2/2003", "2003/13/01", "hôm qua", "5/9/03"])
def test_bad_dates(text: str) -> None:
    assert check("date", text) == Invalid(Reason.BAD_DATE)


def test_date_bounds() -> None:
    expect = {"date": {"min": "2000-01-01", "max": "2010-12-31"}}
    assert check(expect, "1/1/2000") == Valid("2000-01-01", check(expect, "1/1/2000").extra)
    assert check(expect, "31/12/1999") == Invalid(Reason.DATE_OUT_OF_RANGE)


@pytest.mark.parametrize(
    ("text", "value"),
    [("12", "12"), ("3,5", "3.5"), ("1.000", "1000"), ("1.000,5", "1000.5"), (" 7 ", "7")],
)
def test_numbers_with_vietnamese_separators(text: str, value: str) -> None:
    result = check({"number": {"min": 0, "max": 5000}}, text)
    assert isinstance(result, Valid)
    assert result.value == value


def test_number_range_and_garbage() -> None:
    assert check({"number": {"min": 1, "max": 10}}, "11") == Invalid(Reason.OUT_OF_RANGE)
    assert check("number", "mười") == Invalid(Reason.NOT_NUMBER)
    assert check("number", "nan") == Invalid(Reason.NOT_NUMBER)


def test_text_length_bounds() -> None:
    assert check({"text": {"min": 4}}, "  An  ") == Invalid(Reason.TOO_SHORT)
    assert check({"text": {"min": 4}}, " Văn An ") == Valid("Văn An")
    assert check({"text": {"max": 5}}, "quá dài rồi") == Invalid(Reason.TOO_LONG)
    assert check("text", "   ") == Invalid(Reason.EMPTY)


def test_choice_by_title_or_number() -> None:
    expect = {"choice": ["Phòng Hành chính – Nhân sự", "Phòng Kỹ thuật", "Phòng Kinh doanh"]}
    assert check(expect, "phong ky thuat") == Valid("Phòng Kỹ thuật", 1)
    assert check(expect, "3") == Valid("Phòng Kinh doanh", 2)
    assert check(expect, "Phòng Bảo vệ") == Invalid(Reason.NO_CHOICE)


def test_yes_no_with_synonyms_and_own_titles() -> None:
    assert check("yes_no", "uk") == Valid("có", True)
    assert check("yes_no", "ko") == Valid("không", False)
    assert check("yes_no", "có lẽ") == Invalid(Reason.NOT_YES_NO)
    own = {"yes_no": {"options": ["Đã cài rồi", "Chưa cài"]}}
    assert check(own, "chua cai") == Valid("không", False)
    assert check(own, "Đã cài rồi") == Valid("có", True)


def test_unit_match_and_ambiguity() -> None:
    assert check("unit", "phuong hoa thanh") == Valid("hoa-thanh", "Đoàn phường Hòa Thạnh")
    result = check("unit", "thanh")
    assert isinstance(result, Invalid)
    assert result.reason is Reason.UNIT_AMBIGUOUS
    assert len(result.suggestions) == 3
    assert check("unit", "zzzz") == Invalid(Reason.UNIT_UNKNOWN)


def test_image_accepts_photos_and_image_documents_only() -> None:
    expect = Expect(kind=ExpectKind.IMAGE)
    photo = Attachment(mime="image/jpeg", file_id="p1", sha256="aa")
    assert validate(expect, inbound(InboundKind.IMAGE, attachments=(photo,))) == Valid("aa", photo)
    doc = Attachment(mime="image/png", file_id="d1", unique_id="u1")
    assert validate(expect, inbound(InboundKind.FILE, attachments=(doc,))) == Valid("u1", doc)
    pdf = Attachment(mime="application/pdf", file_id="d2")
    assert validate(expect, inbound(InboundKind.FILE, attachments=(pdf,))) == Invalid(
        Reason.NOT_IMAGE
    )
    assert validate(expect, inbound(InboundKind.STICKER)) == Invalid(Reason.STICKER)
    assert validate(expect, inbound(text="đây ạ")) == Invalid(Reason.TEXT_NOT_MEDIA)
    assert validate(expect, inbound(InboundKind.UNSUPPORTED)) == Invalid(Reason.UNSUPPORTED)


def test_file_accepts_any_file_or_image() -> None:
    expect = Expect(kind=ExpectKind.FILE)
    pdf = Attachment(mime="application/pdf", file_id="d2")
    assert validate(expect, inbound(InboundKind.FILE, attachments=(pdf,))) == Valid("d2", pdf)
    assert validate(expect, inbound(InboundKind.STICKER)) == Invalid(Reason.STICKER)


def test_media_where_text_is_expected() -> None:
    photo = Attachment(mime="image/jpeg", file_id="p1")
    expect = Expect(kind=ExpectKind.TEXT)
    assert validate(expect, inbound(InboundKind.IMAGE, attachments=(photo,))) == Invalid(
        Reason.MEDIA_NOT_TEXT
    )
    assert validate(expect, inbound(InboundKind.STICKER)) == Invalid(Reason.STICKER)
    assert validate(expect, inbound(InboundKind.LOCATION)) == Invalid(Reason.LOCATION)


def test_every_reason_has_a_vietnamese_message_naming_the_problem() -> None:
    for reason in Reason:
        for kind in ExpectKind:
            text = messages.reason_text(reason, kind, min=4, max=10)
            assert text and "{" not in text, (reason, kind, text)
    sticker = messages.reason_text(Reason.STICKER, ExpectKind.IMAGE)
    assert "nhãn dán (sticker)" in sticker and "ảnh chụp màn hình" in sticker
    assert "không phải chữ" in messages.reason_text(Reason.TEXT_NOT_MEDIA, ExpectKind.IMAGE)
    assert "Số điện thoại chưa đúng" in messages.reason_text(Reason.BAD_PHONE, ExpectKind.PHONE)
    assert "từ 1 đến 10" in messages.reason_text(
        Reason.OUT_OF_RANGE, ExpectKind.NUMBER, min=1, max=10
    )
    assert Reason.STICKER in KIND_MISMATCH and Reason.BAD_EMAIL not in KIND_MISMATCH
