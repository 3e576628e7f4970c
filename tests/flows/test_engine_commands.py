"""Global commands and organiser actions (SYSTEM events) through `Engine.handle`."""

from __future__ import annotations

from flows.engine import Engine
from flows.events import (
    DataDeletionRequested,
    EvidenceSaved,
    FieldSaved,
    FlowFinished,
    HandoverRequested,
    SubmissionSubmitted,
)
from flows.session import Mode
from flows.vocab import NoticeKind
from tests.flows.conftest import Chat, build, register


def test_help_keeps_the_question(chat: Chat) -> None:
    chat.start()
    chat.press("Đăng ký thông tin")
    chat.say("có")
    chat.say("trợ giúp")
    assert chat.outbound(0).notice is NoticeKind.HELP
    assert "“menu”" in chat.texts[0] and "“kết quả”" in chat.texts[0]
    assert chat.texts[1] == "Họ và tên của bạn là?"
    chat.say("Nguyễn Văn An")
    assert chat.events == (FieldSaved("ho_ten", "Nguyễn Văn An"),)


def test_commands_win_over_free_text(chat: Chat) -> None:
    chat.start()
    chat.press("Đăng ký thông tin")
    chat.say("có")
    chat.say("Menu")  # even where a name is expected
    assert chat.texts == ["Chào bạn! Bạn muốn làm gì?"]
    assert chat.events == ()


def test_a_button_of_the_current_step_wins_over_a_command() -> None:
    bundle = build(
        """
flows:
  menu:
    steps:
      - choose: Bạn muốn xem gì?
        choices:
          - {title: Kết quả, goto: ket_qua}
          - {title: Tin tức, goto: ket_qua}
  ket_qua:
    steps:
      - end: Kết quả thi đua của đơn vị bạn.
"""
    )
    chat = Chat(Engine(bundle))
    chat.start()
    chat.say("kết quả")
    assert chat.texts == ["Kết quả thi đua của đơn vị bạn."]


def test_cancel_leaves_the_flow_and_forgets_its_answers(chat: Chat) -> None:
    chat.start()
    chat.press("Đăng ký thông tin")
    chat.say("có")
    chat.say("Nguyễn Văn An")
    chat.say("hủy")
    assert chat.texts == ["Đã dừng phần đang làm. Khi nào cần, bạn gõ “menu” để bắt đầu lại nhé."]
    session = chat.session
    assert session is not None and session.flow is None and session.data == {}
    chat.say("bat dau lai")
    assert chat.texts == ["Chào bạn! Bạn muốn làm gì?"]


def test_status_before_anything(chat: Chat) -> None:
    chat.say("kết quả")
    assert chat.texts == ["Bạn chưa đăng ký hay gửi bài nào. Gõ “menu” để bắt đầu nhé."]
    assert chat.last.session is None  # nothing worth storing


def test_status_shows_registration_evidence_and_submission(chat: Chat) -> None:
    register(chat)
    chat.press("Thực hiện thôi nào")
    chat.image()
    chat.say("ket qua")
    assert chat.texts[0] == (
        "Kết quả của bạn:\n"
        "• Đăng ký thông tin: đã hoàn thành\n"
        "• Thử thách “Công dân số” năm 2023: đang làm, đã gửi 1/2 minh chứng (vneid)\n\n"
        "Bạn đang làm dở “Thử thách Công dân số”. Mình hỏi tiếp nhé:"
    )
    assert chat.texts[1] == "Bạn đã sử dụng dịch vụ công trực tuyến nào? Thuộc lĩnh vực gì?"
    chat.say("Khai báo tạm trú trực tuyến")
    chat.say("tra cứu")
    assert chat.texts == [
        "Kết quả của bạn:\n"
        "• Đăng ký thông tin: đã hoàn thành\n"
        "• Thử thách “Công dân số” năm 2023: đã nộp (Đợt 1), đang chờ Ban Tổ chức xét duyệt"
    ]


def test_edit_reruns_registration_with_current_values(chat: Chat) -> None:
    register(chat)
    chat.say("sửa thông tin")
    assert chat.texts[0].startswith("Mình sẽ hỏi lại từng thông tin.")
    # Consent was given: not asked again. The first question shows the current value.
    assert chat.texts[1] == "Họ và tên của bạn là?\n(Hiện tại: Nguyễn Văn An)"
    assert chat.buttons == ["Giữ nguyên"]
    chat.press("Giữ nguyên")
    assert chat.events == ()
    assert chat.texts == [
        "Đơn vị học tập và công tác của bạn? (VD: Đoàn phường Hòa Thạnh)\n"
        "(Hiện tại: Đoàn phường Hòa Thạnh)"
    ]
    chat.say("giữ")
    assert chat.texts[0].endswith("(Hiện tại: an.nguyen@gmail.com)")
    chat.say("an.moi@gmail.com")
    assert chat.events == (FieldSaved("email", "an.moi@gmail.com"),)
    assert chat.texts[0].endswith("(Hiện tại: 0912345678)")
    chat.say("giữ nguyên")
    assert chat.texts == ["Đã cập nhật thông tin của bạn."]
    assert not any(isinstance(e, FlowFinished) for e in chat.events)
    session = chat.session
    assert session is not None and session.profile["email"] == "an.moi@gmail.com"
    assert session.mode is Mode.NORMAL and session.flow is None


def test_edit_before_registering_simply_registers(chat: Chat) -> None:
    chat.say("sửa thông tin")
    assert "Bạn đồng ý chứ?" in chat.text


def test_delete_my_data_asks_then_deletes(chat: Chat) -> None:
    register(chat)
    chat.say("xóa dữ liệu của tôi")
    assert "Bạn có chắc muốn xóa" in chat.text
    assert chat.buttons == ["Xóa dữ liệu", "Không xóa"]
    assert chat.events == ()
    chat.press("Xóa dữ liệu")
    assert chat.events == (DataDeletionRequested(),)
    assert "ghi nhận yêu cầu xóa dữ liệu" in chat.text
    assert chat.last.session is None and chat.stored is None


def test_delete_declined_keeps_everything_and_asks_again(chat: Chat) -> None:
    chat.start()
    chat.press("Đăng ký thông tin")
    chat.say("có")
    chat.say("Nguyễn Văn An")
    chat.say("xoa du lieu cua toi")
    chat.say("không")
    assert chat.events == ()
    assert chat.texts == [
        "Mình giữ nguyên dữ liệu của bạn.",
        "Đơn vị học tập và công tác của bạn? (VD: Đoàn phường Hòa Thạnh)",
    ]
    session = chat.session
    assert session is not None and session.data["ho_ten"] == "Nguyễn Văn An"


def test_handover_pauses_until_resumed(chat: Chat) -> None:
    chat.start()
    chat.press("Gặp cán bộ")
    assert chat.events == (FlowFinished("menu"), HandoverRequested("Hỗ trợ"))
    assert chat.texts == ["Mình đã báo cán bộ, bạn chờ chút nhé."]
    chat.say("alo có ai không")
    assert chat.last.outbound == () and chat.last.events == ()
    chat.say("menu")  # the human has the conversation: even commands get nothing
    assert chat.last.outbound == ()
    chat.system("resume")
    assert chat.outbound(0).notice is NoticeKind.SYSTEM
    assert chat.texts == [
        "Trợ lý tự động đã quay lại. Mình tiếp tục nhé.",
        "Cảm ơn bạn đã trao đổi với cán bộ!",
    ]
    assert chat.events == (FlowFinished("ho_tro"),)
    assert chat.session is None  # the flow ended and nothing else was known: nothing to keep


def test_reject_goes_straight_back_to_the_evidence_step(chat: Chat) -> None:
    register(chat)
    chat.press("Thực hiện thôi nào")
    chat.image(sha="blurry")
    chat.say("Khai báo tạm trú trực tuyến")
    assert SubmissionSubmitted("cong_dan_so", "Đợt 1") in chat.events
    chat.system("reject", criterion="vneid", reason="ảnh bị mờ, không đọc được thông tin")
    assert chat.outbound(0).notice is NoticeKind.SYSTEM
    assert chat.texts[0] == (
        "Minh chứng “vneid” của bạn chưa được duyệt: ảnh bị mờ, không đọc được thông tin. "
        "Bạn gửi lại giúp mình nhé."
    )
    assert chat.texts[1].startswith("Đăng nhập VNeID")
    chat.image(sha="sharp")
    assert isinstance(chat.events[0], EvidenceSaved) and chat.events[0].criterion == "vneid"
    # Only the rejected item is asked again, then the submission goes back for review.
    assert SubmissionSubmitted("cong_dan_so", "Đợt 1") in chat.events
    assert not any("dịch vụ công" in t for t in chat.texts)
    session = chat.session
    assert session is not None and session.mode is Mode.NORMAL and session.flow is None


def test_approve_tells_the_person(chat: Chat) -> None:
    chat.system("approve", campaign="cong_dan_so")
    assert chat.texts[0] == (
        "Chúc mừng bạn! Bài dự thi “Thử thách “Công dân số” năm 2023” của bạn đã được Ban Tổ "
        "chức duyệt."
    )
    assert chat.outbound(0).notice is NoticeKind.SYSTEM
    # Then the name for the certificate (none on record here: asked for it; see
    # tests/flows/test_engine_certificates.py).
    assert chat.texts[1].startswith("Bạn gõ họ và tên đầy đủ")


def test_unknown_system_event_is_reported_not_raised(engine: Engine) -> None:
    chat = Chat(engine)
    chat.start()
    from flows.vocab import Channel, Inbound, InboundKind

    inbound = Inbound(
        district="tan-phu",
        channel=Channel.TELEGRAM,
        user_id="u1",
        kind=InboundKind.SYSTEM,
        message_id="s1",
        timestamp=chat.now,
        payload="explode",
    )
    turn = engine.handle(chat.session, inbound, chat.now)
    assert turn.error is not None and turn.outbound == ()
    assert turn.session == chat.session
