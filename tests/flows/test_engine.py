"""Whole conversations through `Engine.handle`: registration, evidence, waves, entry links."""

from __future__ import annotations

from datetime import UTC, datetime

from flows.compiler import CompiledBundle
from flows.engine import Engine
from flows.events import (
    ConsentRecorded,
    EvidenceSaved,
    FieldSaved,
    FlowFinished,
    ReferralRecorded,
    SubmissionSubmitted,
)
from flows.session import dumps
from flows.vocab import InboundKind, NoticeKind
from tests.flows.conftest import TYPED_PHONE, Chat, build, register


def test_first_contact_opens_the_district_menu(chat: Chat) -> None:
    chat.say("xin chào")
    assert chat.texts == ["Chào bạn! Bạn muốn làm gì?"]
    assert chat.buttons == ["Đăng ký thông tin", "Thử thách Công dân số", "Gặp cán bộ"]
    assert chat.outbound().choices[0].payload.isascii()
    assert all(len(c.payload.encode()) <= 64 for c in chat.outbound().choices)


def test_registration_asks_consent_first_and_records_after_it(chat: Chat) -> None:
    chat.start()
    chat.say("1")  # the first menu button by its number
    assert "Bạn đồng ý chứ?" in chat.text
    assert chat.buttons == ["Đồng ý", "Không đồng ý"]
    chat.say("uk")
    assert chat.events == (ConsentRecorded(True, chat.turns[-2].outbound[-1].text),)
    assert chat.texts == ["Họ và tên của bạn là?"]
    chat.say("Nguyễn Văn An")
    assert chat.events == (FieldSaved("ho_ten", "Nguyễn Văn An"),)
    chat.say("phuong hoa thanh")
    assert chat.events == (FieldSaved("don_vi", "hoa-thanh"),)
    chat.say("an.nguyen@gmail.com")
    chat.say("+84 91 234 5678")
    assert chat.events == (FieldSaved("so_dien_thoai", "+84912345678"),)
    # Placeholders: local phone form, the unit's name.
    assert chat.texts == [
        "Cảm ơn Nguyễn Văn An (0912345678, Đoàn phường Hòa Thạnh), bạn đã đăng ký thành công!"
    ]
    assert chat.buttons == ["Thực hiện thôi nào"]
    session = chat.session
    assert session is not None and session.consent is True
    assert session.profile["ho_ten"] == "Nguyễn Văn An"
    assert len(dumps(session)) < 1024


def test_half_way_session_is_small(chat: Chat) -> None:
    chat.start()
    chat.press("Đăng ký thông tin")
    chat.say("có")
    chat.say("Nguyễn Văn An")
    chat.say("phuong hoa thanh")
    assert chat.stored is not None and len(chat.stored) < 300


def test_refusing_consent_records_nothing_and_goes_to_the_menu(chat: Chat) -> None:
    chat.start()
    chat.press("Đăng ký thông tin")
    chat.press("Không đồng ý")
    assert chat.events == (ConsentRecorded(False, chat.turns[-2].outbound[-1].text),)
    assert chat.texts[0] == 'Không sao, khi nào sẵn sàng bạn gõ "menu" nhé.'
    assert chat.texts[1] == "Chào bạn! Bạn muốn làm gì?"
    session = chat.session
    assert session is not None and session.consent is False
    assert session.flow == "menu" and not session.profile and "dang_ky" not in session.done


def test_answers_before_a_later_consent_question_are_held_back() -> None:
    bundle = build(
        """
flows:
  form:
    steps:
      - ask: Họ tên?
        save: ho_ten
      - ask: Số điện thoại?
        expect: phone
        save: phone
      - ask: Bạn đồng ý cho lưu thông tin không?
        expect: yes_no
        save: consent
      - say: "Cảm ơn {ho_ten}, số {phone}."
      - end:
"""
    )
    chat = Chat(Engine(bundle))
    chat.start()
    chat.say("Trần Thị Bình")
    assert chat.events == ()
    chat.say(TYPED_PHONE)
    assert chat.events == ()  # nothing is recorded before consent
    chat.say("Đồng ý")
    assert chat.events[1:] == (
        FieldSaved("ho_ten", "Trần Thị Bình"),
        FieldSaved("phone", "+84912345678"),
        FlowFinished("form"),
    )
    assert isinstance(chat.events[0], ConsentRecorded) and chat.events[0].given
    assert chat.texts == ["Cảm ơn Trần Thị Bình, số 0912345678."]
    # Finished: no state and no form data left (only the consent answer is remembered).
    session = chat.session
    assert session is not None
    assert session.flow is None and session.state is None and session.data == {}


def test_refusing_a_late_consent_drops_the_held_answers() -> None:
    bundle = build(
        """
flows:
  form:
    steps:
      - ask: Họ tên?
        save: ho_ten
      - ask: Bạn đồng ý cho lưu thông tin không?
        expect: yes_no
        save: consent
        when_no: {say: Thông tin của bạn sẽ không được lưu.}
      - end: Xong.
"""
    )
    chat = Chat(Engine(bundle))
    chat.start()
    chat.say("Trần Thị Bình")
    chat.say("không")
    assert chat.events == (ConsentRecorded(False, "Bạn đồng ý cho lưu thông tin không?"),)
    assert chat.texts == ["Thông tin của bạn sẽ không được lưu."]
    assert all(not isinstance(e, FlowFinished) for e in chat.events)
    session = chat.session
    assert session is not None and session.data == {} and session.flow is None


def test_retries_then_a_way_out(chat: Chat) -> None:
    chat.start()
    chat.press("Đăng ký thông tin")
    chat.say("có")
    chat.say("An")  # too short (min 4)
    assert chat.outbound().notice is NoticeKind.RETRY
    assert "ít nhất 4 ký tự" in chat.text
    chat.say("Bo")
    assert chat.outbound().notice is NoticeKind.RETRY
    chat.say("C")  # third failure: a way out
    assert chat.outbound().notice is NoticeKind.HELP
    assert "Menu" in chat.buttons and "Trợ giúp" in chat.buttons
    session = chat.session
    assert session is not None and session.retries == 0 and session.state == "ho_ten"
    chat.say("Nguyễn Văn An")  # still answerable afterwards
    assert chat.events == (FieldSaved("ho_ten", "Nguyễn Văn An"),)
    chat.say("xyz")  # the next question's way-out counter starts from zero
    chat.press("Menu")
    assert chat.texts == ["Chào bạn! Bạn muốn làm gì?"]


def test_step_retry_text_wins_for_a_wrong_format(chat: Chat) -> None:
    register_until_email(chat)
    chat.say("an.nguyen@")
    assert chat.texts == ["Email chưa đúng, bạn nhập lại giúp mình nhé (VD: ten@gmail.com)."]


def test_kind_mismatch_message_wins_over_the_step_retry_text(chat: Chat) -> None:
    register_until_email(chat)
    chat.image()
    assert chat.texts == ["Bạn vừa gửi ảnh hoặc tệp, mình cần địa chỉ email của bạn nhé."]
    assert chat.outbound().notice is NoticeKind.RETRY


def register_until_email(chat: Chat) -> None:
    chat.start()
    chat.press("Đăng ký thông tin")
    chat.say("có")
    chat.say("Nguyễn Văn An")
    chat.say("phuong hoa thanh")


def test_ambiguous_unit_offers_three_buttons(chat: Chat) -> None:
    chat.start()
    chat.press("Đăng ký thông tin")
    chat.say("có")
    chat.say("Nguyễn Văn An")
    chat.say("thanh")
    assert "vài đơn vị gần giống" in chat.text
    assert sorted(chat.buttons) == sorted(
        ["Đoàn phường Hòa Thạnh", "Đoàn phường Phú Thạnh", "Đoàn phường Tân Thành"]
    )
    chat.press("Đoàn phường Phú Thạnh")
    assert chat.events == (FieldSaved("don_vi", "phu-thanh"),)
    assert chat.texts == ["Địa chỉ mail của bạn là gì?"]


def test_evidence_flow_requires_registration_then_continues(chat: Chat) -> None:
    chat.start("huyhieuso")  # deep link straight to the campaign
    assert "Trước tiên, bạn cần hoàn thành “Đăng ký thông tin” nhé." in chat.texts
    assert "Bạn đồng ý chứ?" in chat.texts[-1]
    chat.say("có")
    chat.say("Nguyễn Văn An")
    chat.say("phuong hoa thanh")
    chat.say("an.nguyen@gmail.com")
    chat.say(TYPED_PHONE)
    assert chat.buttons == ["Thực hiện thôi nào"]
    chat.press("Thực hiện thôi nào")
    assert FlowFinished("dang_ky") in chat.events
    vneid = chat.outbound()
    assert vneid.text.startswith("Đăng nhập VNeID")
    assert vneid.image == "media/mau-vneid.png"
    session = chat.session
    assert session is not None and session.flow == "cong_dan_so" and session.stack == []
    assert session.done == ["dang_ky"]


def test_sticker_and_text_where_a_screenshot_is_expected(chat: Chat) -> None:
    register(chat)
    chat.press("Thực hiện thôi nào")
    chat.sticker()
    assert chat.texts == ["Bạn vừa gửi nhãn dán (sticker), mình cần một ảnh chụp màn hình nhé."]
    chat.say("em gửi rồi ạ")
    assert chat.texts[0].startswith("Mình cần một ảnh chụp màn hình, không phải chữ.")
    chat.file("application/pdf")
    assert "không phải là ảnh" in chat.text
    chat.file("image/png")  # a Telegram document that is an image is fine
    assert isinstance(chat.events[0], EvidenceSaved)
    assert chat.events[0].criterion == "vneid" and chat.events[0].campaign == "cong_dan_so"
    assert chat.texts == ["Bạn đã sử dụng dịch vụ công trực tuyến nào? Thuộc lĩnh vực gì?"]


def test_full_campaign_submission_in_a_wave(chat: Chat) -> None:
    register(chat)
    chat.press("Thực hiện thôi nào")
    chat.image(sha="f00d")
    assert chat.events == (EvidenceSaved("cong_dan_so", "vneid", None, chat.events[0].attachment),)
    chat.sticker()  # stickers are never an answer, for text either
    assert "nhãn dán" in chat.text
    chat.say("Đăng ký tạm trú online, lĩnh vực cư trú")
    assert chat.events == (
        EvidenceSaved("cong_dan_so", "dich_vu_cong", "Đăng ký tạm trú online, lĩnh vực cư trú"),
        SubmissionSubmitted("cong_dan_so", "Đợt 1"),
        FlowFinished("cong_dan_so"),
    )
    assert chat.texts == [
        "Cảm ơn Nguyễn Văn An! Ban Tổ chức sẽ xét duyệt minh chứng và gửi huy hiệu cho bạn."
    ]
    session = chat.session
    assert session is not None and session.flow is None and session.data == {}
    assert session.subs == {"cong_dan_so": "Đợt 1"}


def test_campaign_closed_outside_its_waves(engine: Engine) -> None:
    before = Chat(engine, now=datetime(2023, 8, 6, 16, 59, tzinfo=UTC))  # 23:59 on 6/8 in VN
    before.start("huyhieuso")
    assert before.texts == [
        "“Thử thách “Công dân số” năm 2023” hiện không nhận bài. Thời gian nhận bài: "
        "Đợt 1: 07/08/2023 – 14/09/2023; Đợt 2: 15/09/2023 – 15/10/2023."
    ]
    session = before.session
    assert session is None or session.flow is None
    # 00:00 on 7/8 in Vietnam is still 6/8 in UTC: the first day of the wave is open.
    opening = Chat(engine, now=datetime(2023, 8, 6, 17, 0, tzinfo=UTC))
    opening.start("huyhieuso")
    assert "Trước tiên" in opening.texts[0]
    last_day = Chat(engine, now=datetime(2023, 10, 15, 16, 59, tzinfo=UTC))
    last_day.start("huyhieuso")
    assert "Trước tiên" in last_day.texts[0]
    after = Chat(engine, now=datetime(2023, 10, 15, 17, 0, tzinfo=UTC))
    after.start("huyhieuso")
    assert "hiện không nhận bài" in after.text


def test_campaign_closed_text_from_yaml() -> None:
    bundle = build(
        """
campaigns:
  c:
    title: Chiến dịch
    closed: Chiến dịch đã kết thúc, hẹn bạn năm sau!
    waves: [{name: Đợt 1, from: 2023-01-01, to: 2023-01-31}]
flows:
  f:
    campaign: c
    steps:
      - evidence: anh
        ask: Gửi ảnh nhé
        expect: image
      - action: submit
"""
    )
    chat = Chat(Engine(bundle), now=datetime(2024, 1, 1, tzinfo=UTC))
    chat.say("chào")
    assert chat.texts == ["Chiến dịch đã kết thúc, hẹn bạn năm sau!"]


def test_wave_closing_while_answering_does_not_submit() -> None:
    bundle = build(
        """
campaigns:
  c: {title: Chiến dịch, waves: [{name: Đợt 1, from: 2023-01-01, to: 2023-01-31}]}
flows:
  f:
    campaign: c
    steps:
      - evidence: anh
        ask: Gửi ảnh nhé
        expect: image
      - action: submit
"""
    )
    engine = Engine(bundle)
    chat = Chat(engine, now=datetime(2023, 1, 31, 10, tzinfo=UTC))
    chat.start()
    chat.now = datetime(2023, 2, 1, 10, tzinfo=UTC)
    chat.image()
    assert not any(isinstance(e, SubmissionSubmitted) for e in chat.events)
    assert "hiện không nhận bài" in chat.text


def test_referral_link_records_the_code(chat: Chat) -> None:
    chat.start("cb001")
    assert chat.events == (ReferralRecorded("CB001", "cong_dan_so"),)
    session = chat.session
    assert session is not None and session.ref == "CB001"


def test_unknown_ref_opens_the_menu(chat: Chat) -> None:
    chat.start("khong-co")
    assert chat.texts == ["Chào bạn! Bạn muốn làm gì?"]
    assert chat.events == ()


def test_start_without_ref_resets_to_the_menu(chat: Chat) -> None:
    chat.start()
    chat.press("Đăng ký thông tin")
    chat.say("có")
    chat.say("Nguyễn Văn An")
    chat.start()
    assert chat.texts == ["Chào bạn! Bạn muốn làm gì?"]
    session = chat.session
    assert session is not None and session.flow == "menu" and session.data == {}


def test_typed_title_and_old_buttons_pick(chat: Chat) -> None:
    chat.start()
    chat.say("dang ky thong tin")  # a reply keyboard sends the title as text
    assert "Bạn đồng ý chứ?" in chat.text
    chat.say("hủy")
    # An inline button of the earlier menu message still works from idle.
    chat.press("Gặp cán bộ")
    assert chat.texts == ["Mình đã báo cán bộ, bạn chờ chút nhé."]


def test_choose_retry_repeats_the_buttons(chat: Chat) -> None:
    chat.start()
    chat.say("ăn sáng")
    assert chat.outbound().notice is NoticeKind.RETRY
    assert chat.buttons == ["Đăng ký thông tin", "Thử thách Công dân số", "Gặp cán bộ"]
    chat.image()
    assert "mình cần bạn chọn một nút bên dưới" in chat.text
    chat.say("cong dan so")  # a synonym
    assert "Trước tiên" in chat.texts[0]


def test_branch_on_saved_fields() -> None:
    bundle = build(
        """
flows:
  vneid:
    steps:
      - ask: Bạn dùng điện thoại gì?
        expect: {choice: [Android, iPhone]}
        save: may
      - branch:
          - {if: {field: may, equals: iphone}, goto: ios}
        else: android
      - id: android
        say: Vào CH Play, tìm "VNeID" và cài đặt.
        goto: xong
      - id: ios
        say: Vào App Store, tìm "VNeID" và cài đặt.
      - id: xong
        end: Cài xong rồi thì quay lại nhé.
"""
    )
    engine = Engine(bundle)
    iphone = Chat(engine)
    iphone.start()
    iphone.say("2")
    assert iphone.texts == [
        'Vào App Store, tìm "VNeID" và cài đặt.',
        "Cài xong rồi thì quay lại nhé.",
    ]
    assert iphone.events == (FieldSaved("may", "iPhone"), FlowFinished("vneid"))
    android = Chat(engine)
    android.start()
    android.press("Android")
    assert android.texts == [
        'Vào CH Play, tìm "VNeID" và cài đặt.',
        "Cài xong rồi thì quay lại nhé.",
    ]


def test_yes_no_when_no_goes_to_a_step() -> None:
    bundle = build(
        """
flows:
  guide:
    steps:
      - ask: Bạn đã cài VNeID chưa?
        expect: yes_no
        save: da_cai
        when_no: {say: Mình hướng dẫn cài trước nhé., goto: cai_dat}
      - say: Tốt lắm, mình sang bước đăng ký.
        goto: xong
      - id: cai_dat
        say: Vào CH Play hoặc App Store, tìm "VNeID".
      - id: xong
        end:
"""
    )
    chat = Chat(Engine(bundle))
    chat.start()
    chat.say("chưa")
    assert chat.texts == [
        "Mình hướng dẫn cài trước nhé.",
        'Vào CH Play hoặc App Store, tìm "VNeID".',
    ]
    assert chat.events == (FieldSaved("da_cai", "không"), FlowFinished("guide"))


def test_goto_cycle_without_questions_is_reported_not_raised() -> None:
    bundle = build(
        """
flows:
  loop:
    steps:
      - id: a
        say: A
        goto: b
      - id: b
        say: B
        goto: a
"""
    )
    engine = Engine(bundle)
    inbound_turn = engine.handle(
        None,
        chat_inbound("xin chào"),
        datetime(2024, 1, 1, tzinfo=UTC),
    )
    assert inbound_turn.error is not None
    assert inbound_turn.session is None
    assert inbound_turn.outbound[0].notice is NoticeKind.ERROR
    assert "trục trặc" in inbound_turn.outbound[0].text


def chat_inbound(text: str):  # type: ignore[no-untyped-def]
    from flows.vocab import Channel, Inbound

    return Inbound(
        district="x",
        channel=Channel.CONSOLE,
        user_id="u",
        kind=InboundKind.TEXT,
        message_id="m",
        timestamp=datetime(2024, 1, 1, tzinfo=UTC),
        text=text,
    )


def test_unsupported_and_location_messages_get_an_answer(chat: Chat) -> None:
    chat.start()
    chat.press("Đăng ký thông tin")
    chat.say("có")
    chat.send_inbound(InboundKind.UNSUPPORTED)
    assert chat.texts == [
        "Mình chưa đọc được loại tin nhắn này, mình cần câu trả lời bằng chữ nhé."
    ]
    chat.send_inbound(InboundKind.LOCATION)
    assert chat.texts == ["Mình chưa dùng được vị trí bạn gửi, mình cần câu trả lời bằng chữ nhé."]


def test_bench_registration_shape(bundle: CompiledBundle) -> None:
    """The shared benchmark's conversation: one reply per update, summary at the end."""
    from pathlib import Path

    import yaml

    from flows.compiler import compile_bundle
    from flows.schema import Bundle

    path = Path(__file__).resolve().parents[2] / "bench" / "flows.yaml"
    if not path.exists():
        return
    compiled = compile_bundle(Bundle.model_validate(yaml.safe_load(path.read_text())), path.parent)
    chat = Chat(Engine(compiled), district="bench")
    replies = [len(chat.start().outbound)]
    for text in [
        "Nguyễn Văn An 7",
        "Phòng Kỹ thuật",
        "Ủy viên Ban Chấp hành",
        "an.nguyen7@",
        "an.nguyen7@congdoan.vn",
        "0900000007",
        "Đồng ý",
    ]:
        replies.append(len(chat.say(text).outbound))
    assert replies == [1] * 8
    assert chat.texts[0].endswith("• Điện thoại: 0900000007\n• Đồng ý xử lý dữ liệu: Có")
    session = chat.session
    assert session is None or (session.flow is None and session.data == {})
