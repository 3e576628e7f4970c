"""After an approval the engine asks the person to confirm the name exactly as it will be
printed; only a confirmed name becomes a `CertificateRequested`. The drawn certificate comes
back as SYSTEM "certificate" and is handed over with its links."""

from __future__ import annotations

from flows.engine import CERT_EDIT_PAYLOAD, CERT_YES_PAYLOAD, printed_name
from flows.events import CertificateRequested
from flows.session import Session, dumps, loads
from flows.vocab import InboundKind, NoticeKind
from tests.flows.conftest import Chat, register

CONFIRM = "Tên in trên giấy chứng nhận: NGUYỄN VĂN AN — đúng chưa?"


def submit(chat: Chat) -> None:
    register(chat)
    chat.press("Thực hiện thôi nào")
    chat.image()
    chat.say("Thông báo lưu trú trên VNeID, lĩnh vực cư trú")


def test_approval_asks_to_confirm_the_printed_name_then_requests_the_certificate(
    chat: Chat,
) -> None:
    submit(chat)
    chat.system("approve", campaign="cong_dan_so", submission="42")
    assert chat.texts[0].startswith("Chúc mừng bạn!")
    assert chat.texts[1] == CONFIRM
    assert chat.buttons == ["Đúng", "Sửa tên"]
    assert chat.events == ()
    chat.press("Đúng")
    assert chat.events == (CertificateRequested("cong_dan_so", "NGUYỄN VĂN AN", "42"),)
    assert "NGUYỄN VĂN AN" in chat.texts[0]
    session = chat.session
    assert session is not None and session.certs == []


def test_sua_ten_asks_for_the_name_and_confirms_it_again(chat: Chat) -> None:
    submit(chat)
    chat.system("approve", campaign="cong_dan_so", submission="7")
    chat.press("Sửa tên")
    assert chat.texts == [
        "Bạn gõ họ và tên đầy đủ, có dấu, đúng như muốn in trên giấy chứng nhận nhé "
        "(ví dụ: Nguyễn Văn An)."
    ]
    chat.say("Nguyễn 🌸")  # not a name: said why, still asking
    assert chat.last.outbound[0].notice is NoticeKind.RETRY and chat.events == ()
    chat.say("  nguyễn   văn ân ")
    assert chat.texts == ["Tên in trên giấy chứng nhận: NGUYỄN VĂN ÂN — đúng chưa?"]
    chat.say("đúng rồi")  # typed rather than tapped
    assert chat.events == (CertificateRequested("cong_dan_so", "NGUYỄN VĂN ÂN", "7"),)


def test_other_answers_are_asked_again_and_commands_wait_except_help_and_status(
    chat: Chat,
) -> None:
    submit(chat)
    chat.system("approve", campaign="cong_dan_so")
    chat.image()
    assert chat.texts[-1].endswith(CONFIRM) and "“Đúng”" in chat.texts[-1]
    chat.say("menu")
    assert chat.texts[-1].startswith("Bạn xác nhận tên") and chat.events == ()
    chat.say("kết quả")
    assert "chờ bạn xác nhận tên" in chat.texts[0]
    assert chat.texts[-1] == CONFIRM
    chat.say("không")  # "no" to the question means the name is wrong
    assert chat.texts[0].startswith("Bạn gõ họ và tên")


def test_an_approval_outside_the_window_requests_with_the_registered_name(chat: Chat) -> None:
    submit(chat)
    chat.system("approve", campaign="cong_dan_so", submission="9", confirm="0")
    assert chat.events == (CertificateRequested("cong_dan_so", "NGUYỄN VĂN AN", "9"),)
    assert len(chat.texts) == 1 and chat.texts[0].startswith("Chúc mừng")
    session = chat.session
    assert session is not None and session.certs == []


def test_a_missing_or_unprintable_profile_name_is_asked_for_first(chat: Chat) -> None:
    chat.start()
    chat.system("approve", campaign="cong_dan_so")
    assert chat.texts[1].startswith("Bạn gõ họ và tên")
    chat.say("Trần Thị Bình")
    assert chat.texts == ["Tên in trên giấy chứng nhận: TRẦN THỊ BÌNH — đúng chưa?"]


def test_a_paused_conversation_is_asked_when_handed_back(chat: Chat) -> None:
    submit(chat)
    session = chat.session
    assert session is not None
    session.paused = True
    chat.stored = dumps(session)
    chat.system("approve", campaign="cong_dan_so")
    assert len(chat.texts) == 1  # congratulations only: a person is talking to them
    chat.system("resume")
    assert chat.texts[-1] == CONFIRM


def test_two_approvals_are_confirmed_one_after_the_other(chat: Chat) -> None:
    submit(chat)
    chat.system("approve", campaign="cong_dan_so", submission="1")
    chat.system("approve", campaign="khac", submission="2")
    assert len(chat.texts) == 1  # the second waits for the first
    chat.send_inbound(InboundKind.CHOICE, payload=CERT_YES_PAYLOAD, text="Đúng")
    assert chat.events == (CertificateRequested("cong_dan_so", "NGUYỄN VĂN AN", "1"),)
    assert chat.texts[-1] == CONFIRM
    chat.send_inbound(InboundKind.CHOICE, payload=CERT_EDIT_PAYLOAD, text="Sửa tên")
    chat.say("Nguyễn An")
    chat.press("Đúng")
    assert chat.events == (CertificateRequested("khac", "NGUYỄN AN", "2"),)


def test_the_drawn_certificate_is_handed_over_with_its_links(chat: Chat) -> None:
    submit(chat)
    chat.system("approve", campaign="cong_dan_so")
    chat.system(
        "certificate", campaign="cong_dan_so", serial="CDS-2023-000001-K7Q4XM",
        image="/media/" + "a" * 64 + ".png", file="/media/" + "b" * 64 + ".pdf",
        pdf_url="https://loa.example/media/" + "b" * 64 + ".pdf",
        badge="/media/" + "c" * 64 + ".png",
        verify="https://loa.example/verify/CDS-2023-000001-K7Q4XM",
    )
    first, badge = chat.last.outbound
    assert first.image == "/media/" + "a" * 64 + ".png"
    assert first.file == "/media/" + "b" * 64 + ".pdf"
    assert "CDS-2023-000001-K7Q4XM" in first.text
    assert "https://loa.example/verify/CDS-2023-000001-K7Q4XM" in first.text
    assert "https://loa.example/media/" + "b" * 64 + ".pdf" in first.text
    assert badge.image == "/media/" + "c" * 64 + ".png"
    session = chat.session
    assert session is not None and session.certs == []  # the pending question is moot


def test_session_keeps_pending_certificates_through_storage() -> None:
    s = Session(certs=[{"c": "cong_dan_so", "n": "AN", "i": "3", "s": "c"}])
    assert loads(dumps(s)).certs == s.certs
    assert not s.is_blank()


def test_printed_name() -> None:
    assert printed_name("nguyễn  văn an") == "NGUYỄN VĂN AN"
    assert printed_name("Hồ Thị Ngọc-Ánh") == "HỒ THỊ NGỌC-ÁNH"
    assert printed_name("An") is None  # too short
    assert printed_name("Nguyen Van 123") is None
    assert printed_name("Lê 🌸 Hoa") is None
    assert printed_name("x" * 61) is None
