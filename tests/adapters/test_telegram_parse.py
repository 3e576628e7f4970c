"""Telegram adapter: parse the recorded webhook bodies, render replies, verify the secret."""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from adapters.base import BadRequest, ConfigurationError, RecipientUnreachable, RetryLater
from adapters.telegram import (
    MAX_CAPTION,
    MAX_TEXT,
    TelegramAdapter,
    parse_update,
    render,
    split_text,
    verify,
)
from flows.vocab import Channel, Choice, ConversationKey, InboundKind, Outbound
from tests.adapters.platform_fixtures import fixtures_dir


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((fixtures_dir() / name).read_text("utf-8"))
    return data


def one(name: str, district: str = "tan-phu") -> Any:
    parsed = parse_update(load(name), district)
    assert len(parsed) == 1, parsed
    return parsed[0]


# --- parse: the recorded fixtures -------------------------------------------------------------


def test_text_message() -> None:
    m = one("telegram_text.json")
    assert m.kind is InboundKind.TEXT
    assert m.channel is Channel.TELEGRAM
    assert m.district == "tan-phu"
    assert m.user_id == "7000000001"
    assert m.message_id == "900000002"  # update_id: the de-duplication key
    assert m.text == "Họ tên: Nguyễn Thị Lan, lớp 11A2, trường THPT Giả Định"
    assert m.timestamp == datetime.fromtimestamp(1772627440, UTC)
    assert m.timestamp.tzinfo is not None and m.timestamp.utcoffset().total_seconds() == 0


def test_start_deep_link_carries_ref() -> None:
    m = one("telegram_start_deeplink.json")
    assert m.kind is InboundKind.START
    assert m.ref == "camp2026_truongA"
    assert m.message_id == "900000001"


def test_callback_query_is_a_choice_with_its_id_kept() -> None:
    m = one("telegram_callback_query.json")
    assert m.kind is InboundKind.CHOICE
    assert m.payload == "reg:confirm:yes"
    assert m.text == "✅ Đúng"  # the tapped button's title, for the transcript
    assert dict(m.data)["callback_query_id"] == "4382000000000000001"
    assert m.user_id == "7000000001"
    assert m.message_id == "900000003"
    assert m.timestamp.tzinfo is not None


def test_photo_takes_the_largest_size() -> None:
    m = one("telegram_photo.json")
    assert m.kind is InboundKind.IMAGE
    assert m.text == "ảnh chụp màn hình xác nhận nộp bài"
    (a,) = m.attachments
    assert a.file_id is not None and a.file_id.startswith("AgACAgUAAxkBAAIFAKEP13")
    assert a.unique_id == "AQADFAKEP13"
    assert a.size == 182311
    assert a.mime == "image/jpeg"


def test_album_parts_keep_group_and_order() -> None:
    first = one("telegram_album_part1.json")
    second = one("telegram_album_part2.json")
    for part in (first, second):
        assert part.kind is InboundKind.IMAGE
        assert dict(part.data)["media_group_id"] == "13900000000000001"
    assert first.text == "Minh chứng vòng 1 (2 ảnh)"
    assert second.text == ""  # the caption sits on one part only
    assert first.attachments[0].unique_id == "AQADFAKEA13"
    assert second.attachments[0].unique_id == "AQADFAKEA23"
    # delivered in either order, the platform message id restores the album's order
    parts = sorted([second, first], key=lambda p: int(dict(p.data)["telegram_message_id"]))
    assert parts == [first, second]
    assert first.message_id != second.message_id


def test_image_sent_as_document_is_an_image() -> None:
    m = one("telegram_document_image.json")
    assert m.kind is InboundKind.IMAGE
    (a,) = m.attachments
    assert a.mime == "image/png"
    assert a.name == "Screenshot_20260304-193012.png"
    assert a.unique_id == "AgADFAKEdoc"
    assert a.size == 1523344
    assert m.text == "ảnh gốc (gửi dạng file)"


def test_edited_message_is_not_conversation_input() -> None:
    assert parse_update(load("telegram_edited_message.json"), "tan-phu") == []


def test_blocked_bot_is_not_conversation_input() -> None:
    assert parse_update(load("telegram_my_chat_member_blocked.json"), "tan-phu") == []


def test_adapter_parses_raw_webhook_bytes() -> None:
    body = (fixtures_dir() / "telegram_photo.json").read_bytes()
    adapter = TelegramAdapter("tan-phu")
    (m,) = adapter.parse(body)
    assert m.kind is InboundKind.IMAGE
    assert adapter.parse(b"{not json") == []
    assert adapter.parse(b"[1, 2]") == []


# --- parse: shapes without a fixture, built from the recorded ones ---------------------------


def _with_message(**fields: Any) -> dict[str, Any]:
    update = load("telegram_text.json")
    del update["message"]["text"]
    update["message"].update(fields)
    return update


def test_text_is_nfc_normalised() -> None:
    update = load("telegram_text.json")
    decomposed = unicodedata.normalize("NFD", "Nguyễn Thị Lan")
    update["message"]["text"] = decomposed
    (m,) = parse_update(update, "d")
    assert m.text == "Nguyễn Thị Lan"
    assert len(m.text) < len(decomposed)


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("/start", None),
        ("/start huyhieuso", "huyhieuso"),
        ("/start@FakeDangKyBot huyhieuso", "huyhieuso"),
        ("/start " + "a" * 64, "a" * 64),
        ("/start " + "a" * 65, None),  # too long: start without it
        ("/start bad.ref!", None),  # characters outside [A-Za-z0-9_-]
        ("/start đăng_ký", None),
    ],
)
def test_start_payload_is_validated(text: str, ref: str | None) -> None:
    update = load("telegram_start_deeplink.json")
    update["message"]["text"] = text
    (m,) = parse_update(update, "d")
    assert m.kind is InboundKind.START
    assert m.ref == ref


def test_other_commands_are_text() -> None:
    update = load("telegram_start_deeplink.json")
    update["message"]["text"] = "/menu"
    (m,) = parse_update(update, "d")
    assert m.kind is InboundKind.TEXT
    assert m.text == "/menu"
    update["message"]["text"] = "/startover"
    (m,) = parse_update(update, "d")
    assert m.kind is InboundKind.TEXT


def test_other_documents_are_files() -> None:
    update = _with_message(
        document={"file_id": "F1", "file_unique_id": "U1", "file_name": "Bao cao.pdf",
                  "mime_type": "application/pdf", "file_size": 1000}
    )
    (m,) = parse_update(update, "d")
    assert m.kind is InboundKind.FILE
    assert m.attachments[0].mime == "application/pdf"
    assert m.attachments[0].name == "Bao cao.pdf"


def test_stickers_and_animations_are_never_images() -> None:
    sticker = _with_message(sticker={"file_id": "S", "file_unique_id": "SU", "width": 512,
                                     "height": 512, "is_animated": False, "type": "regular"})
    (m,) = parse_update(sticker, "d")
    assert m.kind is InboundKind.STICKER
    # an animation also carries `document` with an image-looking MIME type
    gif = _with_message(
        animation={"file_id": "A", "file_unique_id": "AU", "mime_type": "video/mp4"},
        document={"file_id": "A", "file_unique_id": "AU", "mime_type": "image/gif"},
    )
    (m,) = parse_update(gif, "d")
    assert m.kind is InboundKind.STICKER


def test_location_and_contact() -> None:
    (loc,) = parse_update(_with_message(location={"latitude": 10.79, "longitude": 106.62}), "d")
    assert loc.kind is InboundKind.LOCATION
    assert dict(loc.data) == {"latitude": "10.79", "longitude": "106.62"}
    contact = _with_message(contact={"phone_number": "+84912345678", "first_name": "Lan",
                                     "user_id": 7000000001})
    (c,) = parse_update(contact, "d")
    assert c.kind is InboundKind.CONTACT
    assert c.text == "+84912345678"
    assert dict(c.data)["user_id"] == "7000000001"


def test_unusable_content_is_unsupported_and_service_messages_are_nothing() -> None:
    (m,) = parse_update(_with_message(dice={"emoji": "🎲", "value": 3}), "d")
    assert m.kind is InboundKind.UNSUPPORTED
    assert parse_update(_with_message(pinned_message={"message_id": 1}), "d") == []


def test_group_chats_are_ignored() -> None:
    update = load("telegram_text.json")
    update["message"]["chat"] = {"id": -100123, "type": "supergroup", "title": "Chi đoàn"}
    assert parse_update(update, "d") == []


@pytest.mark.parametrize(
    "update",
    [
        {},
        {"update_id": 1},
        {"update_id": 1, "message": None},
        {"update_id": 1, "message": {"chat": {"type": "private"}}},
        {"update_id": 1, "message": "text"},
        {"update_id": 1, "callback_query": {"data": "x"}},
        {"update_id": 1, "message": {"chat": {"id": 1, "type": "private"}, "date": 10**20,
                                     "text": "x"}},
    ],
)
def test_malformed_updates_never_crash(update: dict[str, Any]) -> None:
    assert parse_update(update, "d") == []


# --- render -----------------------------------------------------------------------------------

UNITS = ("Phòng Hành chính – Nhân sự", "Phòng Kỹ thuật", "Phòng Kinh doanh")


def test_plain_text_removes_any_keyboard() -> None:
    ((method, body),) = render("700000001", Outbound("Bước 4/6: Vui lòng nhập email."))
    assert method == "sendMessage"
    assert body == {
        "chat_id": 700000001,
        "text": "Bước 4/6: Vui lòng nhập email.",
        "reply_markup": {"remove_keyboard": True},
    }


def test_choices_become_a_one_time_reply_keyboard() -> None:
    out = Outbound("Chọn đơn vị", tuple(Choice(u, f"unit_{i}") for i, u in enumerate(UNITS)))
    ((_, body),) = render(7, out)
    assert body["reply_markup"] == {
        "keyboard": [[{"text": u}] for u in UNITS],  # long titles: one per row
        "resize_keyboard": True,
        "one_time_keyboard": True,
    }
    yes_no = Outbound("Đồng ý chứ?", (Choice("Đồng ý", "yes"), Choice("Không đồng ý", "no")))
    ((_, body),) = render(7, yes_no)
    assert body["reply_markup"]["keyboard"] == [[{"text": "Đồng ý"}, {"text": "Không đồng ý"}]]


def test_inline_keyboard_when_asked_and_payloads_fit() -> None:
    out = Outbound("Xác nhận?", (Choice("✅ Đúng", "reg:confirm:yes"), Choice("Sửa", "edit")))
    ((_, body),) = render(7, out, keyboard="inline")
    assert body["reply_markup"] == {
        "inline_keyboard": [
            [{"text": "✅ Đúng", "callback_data": "reg:confirm:yes"}],
            [{"text": "Sửa", "callback_data": "edit"}],
        ]
    }
    # a payload over 64 bytes cannot be callback data: falls back to the reply keyboard
    too_long = Outbound("?", (Choice("A", "đ" * 33), Choice("B", "b")))
    assert len("đ" * 33) < 64 < len(("đ" * 33).encode())
    ((_, body),) = render(7, too_long, keyboard="inline")
    assert "keyboard" in body["reply_markup"]


def test_more_choices_than_buttons_become_a_numbered_list() -> None:
    out = Outbound("Chọn", tuple(Choice(f"Đơn vị {i}", str(i)) for i in range(150)))
    ((_, body),) = render(7, out)
    assert body["reply_markup"] == {"remove_keyboard": True}
    assert body["text"].startswith("Chọn\n\n1. Đơn vị 0\n2. Đơn vị 1\n")
    assert body["text"].endswith("150. Đơn vị 149")


def test_long_text_is_split_at_sentence_boundaries_with_keyboard_last() -> None:
    sentence = "Đây là một câu hướng dẫn kích hoạt VNeID khá dài để thử chia tin nhắn. "
    text = (sentence * 150).strip()
    assert len(text) > MAX_TEXT
    out = Outbound(text, (Choice("Có", "y"), Choice("Không", "n")))
    calls = render(7, out)
    assert len(calls) == 3
    texts = [body["text"] for _, body in calls]
    assert all(len(t) <= MAX_TEXT for t in texts)
    assert all(t.endswith(".") for t in texts)  # cut after a sentence, never inside one
    assert " ".join(texts) == text
    assert [("reply_markup" in body) for _, body in calls] == [False, False, True]


def test_split_counts_utf16_units_and_cuts_a_giant_word() -> None:
    emoji = "🎉" * 3000  # 6,000 UTF-16 units in 3,000 characters
    parts = split_text(emoji, MAX_TEXT)
    assert [len(p.encode("utf-16-le")) // 2 for p in parts] == [4096, 1904]
    assert "".join(parts) == emoji


def test_image_with_short_text_is_one_photo_with_caption() -> None:
    out = Outbound("Chụp màn hình như ảnh mẫu nhé.", image="media/mau-vneid.png")
    ((method, body),) = render(7, out, media_url=lambda p: f"https://loa.example/media/{p}")
    assert method == "sendPhoto"
    assert body == {
        "chat_id": 7,
        "photo": "https://loa.example/media/media/mau-vneid.png",
        "caption": "Chụp màn hình như ảnh mẫu nhé.",
        "reply_markup": {"remove_keyboard": True},
    }


def test_image_with_long_text_sends_the_photo_then_the_text() -> None:
    text = "Hướng dẫn. " * 150
    assert MAX_CAPTION < len(text) < MAX_TEXT
    calls = render(7, Outbound(text, image="https://cdn.example/a.png"))
    assert [m for m, _ in calls] == ["sendPhoto", "sendMessage"]
    assert "caption" not in calls[0][1]
    assert calls[1][1]["text"] == text


def test_render_keeps_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "Cảm ơn bạn")
    ((_, body),) = render(7, Outbound(decomposed))
    assert body["text"] == "Cảm ơn bạn"


# --- verify and send -------------------------------------------------------------------------

SECRET = "fake-tg-webhook-secret_0001"


def test_verify_secret_token_header() -> None:
    assert verify({"X-Telegram-Bot-Api-Secret-Token": SECRET}, SECRET)
    assert verify({"x-telegram-bot-api-secret-token": SECRET}, SECRET)
    assert not verify({"X-Telegram-Bot-Api-Secret-Token": SECRET + "x"}, SECRET)
    assert not verify({"X-Telegram-Bot-Api-Secret-Token": "Đ"}, SECRET)
    assert not verify({}, SECRET)
    assert not verify({"X-Telegram-Bot-Api-Secret-Token": ""}, None)  # fails closed


def test_verify_matches_the_recorded_signature_headers() -> None:
    signatures = load("signatures.json")
    secret = signatures["fake_secrets"]["telegram_secret_token"]
    adapter = TelegramAdapter("d", secret_token=secret)
    telegram = {k: v for k, v in signatures["headers"].items() if k.startswith("telegram_")}
    assert len(telegram) == 9
    for name, headers in telegram.items():
        body = (fixtures_dir() / name).read_bytes()
        assert adapter.verify(body, headers), name
        assert not TelegramAdapter("d", secret_token="other").verify(body, headers)


async def test_send_hands_the_serialised_body_to_the_transport() -> None:
    sent: list[tuple[str, dict[str, Any]]] = []

    async def transport(method: str, body: bytes) -> dict[str, Any]:
        payload = orjson.loads(body)
        sent.append((method, payload))
        return {"ok": True, "result": {"message_id": 1, "chat": {"id": payload.get("chat_id")}}}

    adapter = TelegramAdapter("d", transport=transport)
    key = ConversationKey("d", Channel.TELEGRAM, "700000001")
    await adapter.send(key, Outbound("Xin chào", (Choice("Có", "y"), Choice("Không", "n"))))
    assert sent == [
        (
            "sendMessage",
            {
                "chat_id": 700000001,
                "text": "Xin chào",
                "reply_markup": {
                    "keyboard": [[{"text": "Có"}, {"text": "Không"}]],
                    "resize_keyboard": True,
                    "one_time_keyboard": True,
                },
            },
        )
    ]
    await adapter.answer_callback("4382000000000000001")
    assert sent[-1] == ("answerCallbackQuery", {"callback_query_id": "4382000000000000001"})


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ({"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 7",
          "parameters": {"retry_after": 7}}, RetryLater),
        ({"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"},
         RecipientUnreachable),
        ({"ok": False, "error_code": 400, "description": "Bad Request: chat not found"},
         RecipientUnreachable),
        ({"ok": False, "error_code": 400, "description": "Bad Request: BUTTON_DATA_INVALID"},
         BadRequest),
        ({"ok": False, "error_code": 401, "description": "Unauthorized"}, ConfigurationError),
        ({"ok": False, "error_code": 502, "description": "Bad Gateway"}, RetryLater),
    ],
)
async def test_send_maps_refusals_onto_the_error_tree(
    reply: dict[str, Any], error: type[Exception]
) -> None:
    async def transport(method: str, body: bytes) -> dict[str, Any]:
        return reply

    adapter = TelegramAdapter("d", transport=transport)
    with pytest.raises(error) as caught:
        await adapter.send(ConversationKey("d", Channel.TELEGRAM, "1"), Outbound("x"))
    if reply["error_code"] == 429:
        assert isinstance(caught.value, RetryLater)
        assert caught.value.retry_after == 7.0


async def test_send_without_transport_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        await TelegramAdapter("d").send(ConversationKey("d", Channel.TELEGRAM, "1"), Outbound("x"))
