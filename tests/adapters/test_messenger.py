"""Messenger adapter: signatures on the recorded webhook bodies, parsing of every fixture,
rendering within Messenger's limits, and sending against a local fake Graph API."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import unicodedata
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.base import (
    AdapterError,
    BadRequest,
    ConfigurationError,
    OutsideWindow,
    RecipientUnreachable,
    RetryLater,
)
from adapters.messenger import (
    GRAPH_API_VERSION,
    SUBSCRIBED_FIELDS,
    MessengerAdapter,
    graph_root,
)
from adapters.messenger_render import (
    DEFAULT_PROMPT,
    MAX_TEMPLATE_TEXT,
    MAX_TEXT,
    MAX_TITLE,
)
from flows.vocab import Channel, Choice, ConversationKey, InboundKind, Outbound
from tests.fakes.graph_api import FakeGraphApi

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SIGNATURES = json.loads((FIXTURES / "signatures.json").read_text("utf-8"))
APP_SECRET = SIGNATURES["fake_secrets"]["messenger_app_secret"]
MESSENGER_FIXTURES = sorted(p.name for p in FIXTURES.glob("messenger_*.json"))

PAGE = "111111111111111"
DISTRICT = "tan-phu"
TOKEN = "fake-page-token-tan-phu"
USER = "2222222222222222"
APP_ID = "999999999999999"
PUBLIC_URL = "https://loa.example.vn"
KEY = ConversationKey(DISTRICT, Channel.MESSENGER, USER)


def body_of(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def signed(body: bytes, secret: str = APP_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}"}


def event_body(*events: dict[str, Any], page: str = PAGE) -> bytes:
    """A webhook body with one entry per event, escaped as Meta sends it."""
    entries = [{"id": page, "time": 1772417700999, "messaging": [event]} for event in events]
    return json.dumps({"object": "page", "entry": entries}).encode()


def user_event(**fields: Any) -> dict[str, Any]:
    return {"sender": {"id": USER}, "recipient": {"id": PAGE}, "timestamp": 1772417700000, **fields}


def make_adapter(
    session: aiohttp.ClientSession | None = None,
    *,
    graph_api: str = "https://graph.invalid",
    app_id: str | None = APP_ID,
    public_url: str = PUBLIC_URL,
    timeout: float = 5.0,
    pages: dict[str, tuple[str, str]] | None = None,
) -> MessengerAdapter:
    return MessengerAdapter(
        app_secret=APP_SECRET,
        verify_token="loa-verify-token",
        pages=pages if pages is not None else {PAGE: (DISTRICT, TOKEN)},
        session=session,  # type: ignore[arg-type]  # parse/render tests never send
        graph_api=graph_api,
        public_url=public_url,
        app_id=app_id,
        timeout=timeout,
    )


@pytest.fixture
def adapter() -> MessengerAdapter:
    return make_adapter()


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraphApi]:
    async with FakeGraphApi(tokens={TOKEN}, app_secret=APP_SECRET) as fake:
        yield fake


@pytest.fixture
async def live(graph: FakeGraphApi) -> AsyncIterator[MessengerAdapter]:
    async with aiohttp.ClientSession() as session:
        yield make_adapter(session, graph_api=graph.url, timeout=0.3)


# --- verification ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MESSENGER_FIXTURES)
def test_every_fixture_verifies_with_its_recorded_signature(
    adapter: MessengerAdapter, name: str
) -> None:
    body = body_of(name)
    headers = SIGNATURES["headers"][name]
    assert adapter.verify(body, headers)
    # header names are case-insensitive, also in a plain dict
    assert adapter.verify(body, {"x-hub-signature-256": headers["X-Hub-Signature-256"]})


@pytest.mark.parametrize("name", MESSENGER_FIXTURES)
def test_a_tampered_byte_or_a_missing_header_fails(adapter: MessengerAdapter, name: str) -> None:
    body = body_of(name)
    headers = SIGNATURES["headers"][name]
    tampered = bytearray(body)
    tampered[len(tampered) // 2] ^= 0x01
    assert not adapter.verify(bytes(tampered), headers)
    assert not adapter.verify(body, {})
    assert not adapter.verify(body, {"X-Hub-Signature": headers["X-Hub-Signature-256"]})


@pytest.mark.parametrize(
    "header",
    [
        "",
        "sha256=",
        "sha1=" + "0" * 40,
        "sha256=zz",
        "sha256=" + "0" * 64,
        "sha256=ñ" + "0" * 63,
        "nonsense",
    ],
)
def test_malformed_signatures_fail(adapter: MessengerAdapter, header: str) -> None:
    assert not adapter.verify(body_of("messenger_text.json"), {"X-Hub-Signature-256": header})


def test_the_signature_needs_the_app_secret_not_another_key() -> None:
    body = body_of("messenger_text.json")
    assert not make_adapter().verify(body, signed(body, secret="fake-verify-token"))
    assert make_adapter().verify(body, signed(body))


def test_signature_is_over_the_escaped_bytes_not_a_reserialisation(
    adapter: MessengerAdapter,
) -> None:
    body = body_of("messenger_batch_two_users.json")
    headers = SIGNATURES["headers"]["messenger_batch_two_users.json"]
    reserialised = json.dumps(json.loads(body), ensure_ascii=False).encode()
    assert adapter.verify(body, headers)
    assert not adapter.verify(reserialised, headers)


def test_handshake_answers_the_challenge_only_with_our_token(adapter: MessengerAdapter) -> None:
    good = {"hub.mode": "subscribe", "hub.verify_token": "loa-verify-token", "hub.challenge": "42"}
    assert adapter.verify_handshake(good) == "42"
    assert adapter.verify_handshake({**good, "hub.verify_token": "wrong"}) is None
    assert adapter.verify_handshake({**good, "hub.mode": "unsubscribe"}) is None
    assert adapter.verify_handshake({k: v for k, v in good.items() if k != "hub.challenge"}) is None
    assert adapter.verify_handshake({}) is None


def test_an_empty_verify_token_never_matches() -> None:
    adapter = MessengerAdapter(
        app_secret=APP_SECRET,
        verify_token="",
        pages={},
        session=None,  # type: ignore[arg-type]
    )
    query = {"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "42"}
    assert adapter.verify_handshake(query) is None


def test_configuration_mistakes_are_refused_in_vietnamese() -> None:
    with pytest.raises(ValueError, match="app secret"):
        MessengerAdapter(
            app_secret="",
            verify_token="t",
            pages={},
            session=None,  # type: ignore[arg-type]
        )
    with pytest.raises(ValueError, match="hai Trang"):
        make_adapter(pages={"1": (DISTRICT, "a"), "2": (DISTRICT, "b")})


# --- parsing the recorded fixtures -------------------------------------------------------------


@pytest.mark.parametrize("name", MESSENGER_FIXTURES)
def test_every_fixture_parses_into_this_district_without_warnings(
    adapter: MessengerAdapter, name: str
) -> None:
    parsed = adapter.parse_all(body_of(name))
    assert parsed.warnings == ()
    for inbound in parsed.inbounds:
        assert inbound.district == DISTRICT
        assert inbound.channel is Channel.MESSENGER
        assert inbound.timestamp.tzinfo is UTC
        assert unicodedata.is_normalized("NFC", inbound.text)
    assert len({i.message_id for i in parsed.inbounds}) == len(parsed.inbounds)


def test_text(adapter: MessengerAdapter) -> None:
    [inbound] = adapter.parse(body_of("messenger_text.json"))
    assert inbound.kind is InboundKind.TEXT
    assert inbound.user_id == USER
    assert inbound.text == "chao ad, em muon dang ky tham gia su kien a"
    assert inbound.message_id == "m_FAKEmid0001_textNoDiacritics_xxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    assert inbound.timestamp == datetime(2026, 3, 2, 2, 15, tzinfo=UTC)


def test_quick_reply_is_a_choice_with_its_payload(adapter: MessengerAdapter) -> None:
    [inbound] = adapter.parse(body_of("messenger_quick_reply.json"))
    assert inbound.kind is InboundKind.CHOICE
    assert inbound.payload == "REG_GRADE:11"
    assert inbound.text == "Lớp 11"


def test_postback_button_is_a_choice(adapter: MessengerAdapter) -> None:
    [inbound] = adapter.parse(body_of("messenger_postback_button.json"))
    assert inbound.kind is InboundKind.CHOICE
    assert inbound.payload == "REG_CONFIRM:yes"
    assert inbound.text == "Xác nhận thông tin"
    assert inbound.message_id == "m_FAKEmid0003_postbackButton_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"


def test_get_started_with_referral_starts_with_the_raw_ref(adapter: MessengerAdapter) -> None:
    [inbound] = adapter.parse(body_of("messenger_postback_get_started_referral.json"))
    assert inbound.kind is InboundKind.START
    # Meta allows "." in refs, Loa's own refs do not: kept as sent, the engine decides.
    assert inbound.ref == "camp2026.truongA"
    assert inbound.payload == "GET_STARTED"
    assert inbound.message_id == "m_FAKEmid0000_getStarted_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"


def test_get_started_without_referral_is_a_start_without_ref(adapter: MessengerAdapter) -> None:
    body = event_body(user_event(postback={"title": "Bắt đầu", "payload": "GET_STARTED"}))
    [inbound] = adapter.parse(body)
    assert inbound.kind is InboundKind.START
    assert inbound.ref is None
    assert inbound.message_id == f"{USER}:1772417700000"


def test_referral_in_an_existing_thread_starts_keyed_by_sender_and_time(
    adapter: MessengerAdapter,
) -> None:
    [inbound] = adapter.parse(body_of("messenger_referral_existing_thread.json"))
    assert inbound.kind is InboundKind.START
    assert inbound.ref == "camp2026.nopbai"
    assert inbound.message_id == f"{USER}:1772504100000"
    assert inbound.timestamp == datetime(2026, 3, 3, 2, 15, tzinfo=UTC)


def test_image(adapter: MessengerAdapter) -> None:
    [inbound] = adapter.parse(body_of("messenger_image.json"))
    assert inbound.kind is InboundKind.IMAGE
    assert inbound.message_id == "m_FAKEmid0004_image_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    [attachment] = inbound.attachments
    assert attachment.url is not None and "FAKE_1_n.jpg" in attachment.url
    assert attachment.mime == "image/jpeg"


def test_three_photos_sent_together_are_three_images_in_order(adapter: MessengerAdapter) -> None:
    inbounds = adapter.parse(body_of("messenger_multi_image.json"))
    assert [i.kind for i in inbounds] == [InboundKind.IMAGE] * 3
    mid = "m_FAKEmid0005_threeImages_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    assert [i.message_id for i in inbounds] == [f"{mid}#1", f"{mid}#2", f"{mid}#3"]
    urls = [i.attachments[0].url or "" for i in inbounds]
    assert [u.split("/")[-1].split("?")[0] for u in urls] == [
        "FAKE_2_n.jpg",
        "FAKE_3_n.jpg",
        "FAKE_4_n.jpg",
    ]


def test_file_keeps_its_name_and_type(adapter: MessengerAdapter) -> None:
    [inbound] = adapter.parse(body_of("messenger_file.json"))
    assert inbound.kind is InboundKind.FILE
    [attachment] = inbound.attachments
    assert attachment.name == "don_dang_ky.pdf"
    assert attachment.mime == "application/pdf"


def test_like_during_the_transition_is_one_sticker_never_an_image(
    adapter: MessengerAdapter,
) -> None:
    [inbound] = adapter.parse(body_of("messenger_like_sticker.json"))
    assert inbound.kind is InboundKind.STICKER
    assert inbound.message_id == "m_FAKEmid0007_like_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    assert inbound.attachments[0].unique_id == "369239263222822"
    assert dict(inbound.data) == {"sticker_id": "369239263222822", "like": "true"}


@pytest.mark.parametrize("shape", ["legacy_image_only", "new_sticker_only", "top_level_only"])
def test_every_sticker_shape_is_a_sticker(adapter: MessengerAdapter, shape: str) -> None:
    fixture = json.loads(body_of("messenger_like_sticker.json"))
    message = fixture["entry"][0]["messaging"][0]["message"]
    legacy, new = message["attachments"]
    if shape == "legacy_image_only":
        del message["sticker_id"]
        message["attachments"] = [legacy]
    elif shape == "new_sticker_only":
        del message["sticker_id"]
        new["payload"]["sticker_id"] = 126362180881330  # not a like
        message["attachments"] = [new]
    else:
        del message["attachments"]
    [inbound] = adapter.parse(json.dumps(fixture).encode())
    assert inbound.kind is InboundKind.STICKER
    assert ("like", "true") in inbound.data or shape == "new_sticker_only"


def test_a_batch_of_two_users_gives_both_in_order(adapter: MessengerAdapter) -> None:
    inbounds = adapter.parse(body_of("messenger_batch_two_users.json"))
    assert [(i.user_id, i.text) for i in inbounds] == [
        ("2222222222222222", "Họ tên: Nguyễn Thị Lan"),
        ("2222222222222233", "ho ten: tran van minh"),
    ]


def test_a_large_batch_keeps_every_event_in_order(adapter: MessengerAdapter) -> None:
    events = [
        user_event(sender={"id": f"30000000000{n:05d}"}, message={"mid": f"m_{n}", "text": str(n)})
        for n in range(300)
    ]
    inbounds = adapter.parse(event_body(*events))
    assert [i.text for i in inbounds] == [str(n) for n in range(300)]


def test_our_own_echo_is_not_input_but_an_echo_from_loa(adapter: MessengerAdapter) -> None:
    body = body_of("messenger_echo.json")
    assert adapter.parse(body) == []
    [echo] = adapter.parse_echoes(body)
    assert echo.district == DISTRICT
    assert echo.user_id == USER  # the person the Page wrote to
    assert echo.mid == "m_FAKEmid0010_echo_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    assert echo.app_id == APP_ID
    assert echo.metadata == "outbox:0f3c9a2e"
    assert echo.outbox_id == "0f3c9a2e"
    assert echo.from_loa and not echo.by_human


def test_echo_recognised_by_metadata_alone_when_no_app_id_is_configured() -> None:
    [echo] = make_adapter(app_id=None).parse_echoes(body_of("messenger_echo.json"))
    assert echo.from_loa


def test_a_human_reply_from_the_page_inbox_is_an_echo_not_from_loa(
    adapter: MessengerAdapter,
) -> None:
    echo_event = {
        "sender": {"id": PAGE},
        "recipient": {"id": USER},
        "timestamp": 1772417800000,
        "message": {
            "mid": "m_human",
            "is_echo": True,
            "app_id": 263902037430900,  # the Page inbox, not our app
            "text": "Chào em, anh là admin Trang nè.",
        },
    }
    body = event_body(echo_event)
    assert adapter.parse(body) == []
    [echo] = adapter.parse_echoes(body)
    assert not echo.from_loa and echo.by_human
    assert echo.outbox_id is None
    assert echo.user_id == USER


def test_deliveries_and_reads_are_neither_input_nor_echoes(adapter: MessengerAdapter) -> None:
    parsed = adapter.parse_all(body_of("messenger_delivery_read.json"))
    assert parsed.inbounds == ()
    assert parsed.echoes == ()
    assert parsed.warnings == ()


def test_an_unknown_page_gives_nothing_and_a_warning() -> None:
    adapter = make_adapter(pages={"999000": ("other", "t")})
    parsed = adapter.parse_all(body_of("messenger_text.json"))
    assert parsed.inbounds == ()
    assert len(parsed.warnings) == 1 and PAGE in parsed.warnings[0]


def test_events_of_two_pages_go_to_their_own_districts() -> None:
    adapter = make_adapter(pages={PAGE: (DISTRICT, TOKEN), "5555": ("binh-tan", "t2")})
    body = event_body(
        user_event(message={"mid": "m_a", "text": "a"}),
        {**user_event(message={"mid": "m_b", "text": "b"}), "recipient": {"id": "5555"}},
        page="",
    )
    assert [(i.district, i.text) for i in adapter.parse(body)] == [
        (DISTRICT, "a"),
        ("binh-tan", "b"),
    ]


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b'{"object": "instagram", "entry": []}', b'{"object": "page"}'],
)
def test_bad_bodies_never_raise(adapter: MessengerAdapter, body: bytes) -> None:
    parsed = adapter.parse_all(body)
    assert parsed.inbounds == () and parsed.echoes == ()
    assert bool(parsed.warnings) is (body != b'{"object": "page"}')


def test_decomposed_vietnamese_is_normalised_to_nfc(adapter: MessengerAdapter) -> None:
    decomposed = unicodedata.normalize("NFD", "Nguyễn Thị Lan")
    assert decomposed != "Nguyễn Thị Lan"
    [inbound] = adapter.parse(event_body(user_event(message={"mid": "m", "text": decomposed})))
    assert inbound.text == "Nguyễn Thị Lan"


def test_other_attachment_kinds(adapter: MessengerAdapter) -> None:
    attachments = [
        {"type": "location", "payload": {"coordinates": {"lat": 10.79, "long": 106.63}}},
        {"type": "video", "payload": {"url": "https://video.xx.fbcdn.net/v/FAKE.mp4?oe=1"}},
        {"type": "fallback", "payload": {"url": "https://example.com/shared"}},
    ]
    inbounds = adapter.parse(
        event_body(user_event(message={"mid": "m", "attachments": attachments}))
    )
    assert [i.kind for i in inbounds] == [
        InboundKind.LOCATION,
        InboundKind.FILE,
        InboundKind.UNSUPPORTED,
    ]
    assert dict(inbounds[0].data) == {"lat": "10.79", "long": "106.63"}
    assert inbounds[1].attachments[0].mime == "video/mp4"
    assert [i.message_id for i in inbounds] == ["m#1", "m#2", "m#3"]


def test_a_message_with_nothing_usable_is_unsupported(adapter: MessengerAdapter) -> None:
    [inbound] = adapter.parse(
        event_body(user_event(message={"mid": "m", "reply_to": {"mid": "x"}}))
    )
    assert inbound.kind is InboundKind.UNSUPPORTED


# --- rendering ---------------------------------------------------------------------------------

SENTENCE = (
    "Bạn đăng nhập ứng dụng VNeID, chọn mục Thông tin cá nhân rồi chụp màn hình gửi cho mình."
)


def test_long_vietnamese_text_is_split_on_sentences_within_the_limit(
    adapter: MessengerAdapter,
) -> None:
    text = " ".join(f"Bước {n}: {SENTENCE}" for n in range(1, 60))
    assert len(text) > 2 * MAX_TEXT
    messages = adapter.render(Outbound(text))
    assert len(messages) >= 3
    for message in messages:
        assert len(message["text"]) <= MAX_TEXT
        assert message["text"].endswith("mình.")
        assert unicodedata.is_normalized("NFC", message["text"])
    assert " ".join(m["text"] for m in messages).split() == text.split()


def test_rendered_text_is_nfc_even_from_decomposed_input(adapter: MessengerAdapter) -> None:
    [message] = adapter.render(Outbound(unicodedata.normalize("NFD", "Cảm ơn bạn đã đăng ký!")))
    assert message["text"] == "Cảm ơn bạn đã đăng ký!"


def test_every_message_carries_the_outbox_marker(adapter: MessengerAdapter) -> None:
    text = " ".join([SENTENCE] * 40)
    messages = adapter.render(Outbound(text, image="media/mau-vneid.png"), outbox_id="ob-7")
    assert len(messages) > 2
    assert {m["metadata"] for m in messages} == {"outbox:ob-7"}
    assert {m["metadata"] for m in adapter.render(Outbound("Chào bạn"))} == {"outbox:loa"}


def test_up_to_three_short_choices_are_a_button_template(adapter: MessengerAdapter) -> None:
    choices = (Choice("Đồng ý", "yes"), Choice("Không đồng ý", "no"))
    [message] = adapter.render(Outbound("Bạn đồng ý chứ?", choices=choices))
    payload = message["attachment"]["payload"]
    assert payload["template_type"] == "button"
    assert payload["text"] == "Bạn đồng ý chứ?"
    assert payload["buttons"] == [
        {"type": "postback", "title": "Đồng ý", "payload": "yes"},
        {"type": "postback", "title": "Không đồng ý", "payload": "no"},
    ]


def test_three_choices_under_a_text_too_long_for_a_template_become_quick_replies(
    adapter: MessengerAdapter,
) -> None:
    text = " ".join([SENTENCE] * 9)
    assert MAX_TEMPLATE_TEXT < len(text) <= MAX_TEXT
    choices = tuple(Choice(t, t.lower()) for t in ("Có", "Không", "Để sau"))
    [message] = adapter.render(Outbound(text, choices=choices))
    assert message["text"] == text
    assert [q["title"] for q in message["quick_replies"]] == ["Có", "Không", "Để sau"]


def test_five_choices_are_quick_replies(adapter: MessengerAdapter) -> None:
    titles = ["Đoàn trường", "Đoàn phường", "Chi đoàn", "Hội LHTN", "Khác"]
    choices = tuple(Choice(t, f"UNIT:{n}") for n, t in enumerate(titles))
    [message] = adapter.render(Outbound("Bạn thuộc đơn vị nào?", choices=choices))
    assert message["text"] == "Bạn thuộc đơn vị nào?"
    assert message["quick_replies"] == [
        {"content_type": "text", "title": t, "payload": f"UNIT:{n}"} for n, t in enumerate(titles)
    ]


def test_titles_too_long_become_a_numbered_list_with_number_taps(
    adapter: MessengerAdapter,
) -> None:
    titles = ["Đoàn phường Hòa Thạnh, quận Tân Phú", "Đoàn phường Tân Quý", "Khác"]
    assert len(titles[0]) > MAX_TITLE
    choices = tuple(Choice(t, f"U{n}") for n, t in enumerate(titles))
    [message] = adapter.render(Outbound("Đơn vị của bạn?", choices=choices))
    lines = message["text"].splitlines()
    assert lines[0] == "Đơn vị của bạn?"
    assert [f"{n}. {t}" for n, t in enumerate(titles, 1)] == lines[2:5]
    assert [(q["title"], q["payload"]) for q in message["quick_replies"]] == [
        ("1", "U0"),
        ("2", "U1"),
        ("3", "U2"),
    ]


def test_twenty_choices_become_numbered_text_only(adapter: MessengerAdapter) -> None:
    choices = tuple(Choice(f"Chi đoàn 11A{n}", f"CD:{n}") for n in range(1, 21))
    messages = adapter.render(Outbound("Bạn học lớp nào?", choices=choices))
    assert all("quick_replies" not in m and "attachment" not in m for m in messages)
    text = "\n".join(m["text"] for m in messages)
    for n in range(1, 21):
        assert f"\n{n}. Chi đoàn 11A{n}\n" in text + "\n"
    assert "số thứ tự" in text


def test_a_payload_messenger_cannot_carry_falls_back_to_numbered_text(
    adapter: MessengerAdapter,
) -> None:
    choices = (Choice("Có", "x" * 1001), Choice("Không", "no"))
    [message] = adapter.render(Outbound("Tiếp tục?", choices=choices))
    assert "quick_replies" not in message and "attachment" not in message
    assert "1. Có" in message["text"] and "2. Không" in message["text"]


def test_choices_without_text_get_a_prompt(adapter: MessengerAdapter) -> None:
    [message] = adapter.render(Outbound("", choices=(Choice("Menu", "menu"),)))
    assert message["attachment"]["payload"]["text"] == DEFAULT_PROMPT


def test_image_by_url_under_the_public_address_after_the_text(adapter: MessengerAdapter) -> None:
    text, image = adapter.render(Outbound("Ảnh mẫu đây:", image="media/mau vneid.png"))
    assert text["text"] == "Ảnh mẫu đây:"
    assert image["attachment"] == {
        "type": "image",
        "payload": {"url": f"{PUBLIC_URL}/media/mau%20vneid.png", "is_reusable": True},
    }
    [passthrough] = adapter.render(Outbound("", image="https://cdn.example.vn/a.png"))
    assert passthrough["attachment"]["payload"]["url"] == "https://cdn.example.vn/a.png"


def test_quick_replies_ride_on_the_image_when_it_is_last(adapter: MessengerAdapter) -> None:
    choices = (Choice("Đã hiểu", "ok"), Choice("Xem lại", "again"))
    text, image = adapter.render(Outbound("Làm như ảnh nhé.", choices=choices, image="a.png"))
    assert "quick_replies" not in text
    assert [q["payload"] for q in image["quick_replies"]] == ["ok", "again"]


def test_a_file_is_sent_as_a_file_attachment(adapter: MessengerAdapter) -> None:
    [message] = adapter.render(Outbound("", file="https://loa.example.vn/media/chung-nhan.pdf"))
    assert message["attachment"]["type"] == "file"


def test_media_without_a_public_address_is_a_configuration_error() -> None:
    adapter = make_adapter(public_url="")
    with pytest.raises(ConfigurationError, match="LOA_PUBLIC_URL"):
        adapter.render(Outbound("Ảnh mẫu", image="media/mau.png"))
    assert adapter.render(Outbound("Chỉ có chữ"))[0]["text"] == "Chỉ có chữ"


def test_graph_root_pins_the_version_once() -> None:
    assert (
        graph_root("https://graph.facebook.com")
        == f"https://graph.facebook.com/{GRAPH_API_VERSION}"
    )
    assert graph_root("https://graph.facebook.com/v26.0/") == "https://graph.facebook.com/v26.0"
    assert graph_root("http://127.0.0.1:9/") == f"http://127.0.0.1:9/{GRAPH_API_VERSION}"


# --- sending against the fake Graph API --------------------------------------------------------


async def test_send_posts_each_part_in_order_as_a_response(
    live: MessengerAdapter, graph: FakeGraphApi
) -> None:
    outbound = Outbound(
        " ".join([SENTENCE] * 30),
        image="media/mau.png",
        choices=(Choice("Gửi ngay", "send"), Choice("Để sau", "later")),
    )
    await live.send(KEY, outbound, outbox_id="ob-1")
    assert graph.messages == live.render(outbound, outbox_id="ob-1")
    assert len(graph.messages) >= 3
    for request in graph.sends:
        assert request.path == f"/{GRAPH_API_VERSION}/me/messages"
        assert request.body["recipient"] == {"id": USER}
        assert request.body["messaging_type"] == "RESPONSE"
        assert request.query["access_token"] == TOKEN


async def test_renders_of_every_choice_style_are_accepted_by_the_send_api(
    live: MessengerAdapter, graph: FakeGraphApi
) -> None:
    for count, title in ((2, "Có"), (3, "Đồng ý"), (5, "Lựa chọn"), (13, "x" * 30), (40, "Lớp")):
        choices = tuple(Choice(f"{title} {n}", f"P{n}") for n in range(count))
        await live.send(KEY, Outbound("Bạn chọn gì?", choices=choices))
    assert len(graph.sends) == 5


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("outside_window", OutsideWindow),
        ("unreachable", RecipientUnreachable),
        ("no_matching_user", RecipientUnreachable),
        ("invalid_token", ConfigurationError),
        ("permission", ConfigurationError),
        ("no_send_permission", ConfigurationError),
        ("page_restricted", ConfigurationError),
        ("bad_request", BadRequest),
        ("rate_limited", RetryLater),
        ("temporary", RetryLater),
        ("send_failure", RetryLater),
    ],
)
async def test_graph_errors_map_to_the_delivery_error_tree(
    live: MessengerAdapter, graph: FakeGraphApi, error: str, expected: type[AdapterError]
) -> None:
    graph.fail_next(error)
    with pytest.raises(expected) as raised:
        await live.send(KEY, Outbound("Chào bạn"))
    assert type(raised.value) is expected
    assert TOKEN not in str(raised.value)
    # the next send goes through: the failure was about that one request
    await live.send(KEY, Outbound("Chào bạn"))
    assert len(graph.messages) == 1


async def test_http_429_is_retry_later_with_retry_after(
    live: MessengerAdapter, graph: FakeGraphApi
) -> None:
    graph.answer_next(429, {"error": {"message": "Too many", "code": 4}}, {"Retry-After": "7"})
    with pytest.raises(RetryLater) as raised:
        await live.send(KEY, Outbound("Chào bạn"))
    assert raised.value.retry_after == 7.0


async def test_business_use_case_throttling_gives_its_wait(
    live: MessengerAdapter, graph: FakeGraphApi
) -> None:
    usage = {
        "123": [{"type": "messenger", "call_count": 100, "estimated_time_to_regain_access": 5}]
    }
    graph.fail_next("rate_limited", headers={"X-Business-Use-Case-Usage": json.dumps(usage)})
    with pytest.raises(RetryLater) as raised:
        await live.send(KEY, Outbound("Chào bạn"))
    assert raised.value.retry_after == 300.0


async def test_a_5xx_without_json_is_retry_later(
    live: MessengerAdapter, graph: FakeGraphApi
) -> None:
    graph.answer_next(503, b"<html>Service Unavailable</html>")
    with pytest.raises(RetryLater):
        await live.send(KEY, Outbound("Chào bạn"))


async def test_a_timeout_is_retry_later_and_does_not_hang(
    live: MessengerAdapter, graph: FakeGraphApi
) -> None:
    graph.delay_next(5)
    started = time.monotonic()
    with pytest.raises(RetryLater, match="có thể đã tới"):
        await live.send(KEY, Outbound("Chào bạn"))
    assert time.monotonic() - started < 2


async def test_an_unreachable_graph_api_is_retry_later() -> None:
    fake = await FakeGraphApi().start()
    url = fake.url
    await fake.close()  # nothing listens there any more
    async with aiohttp.ClientSession() as session:
        adapter = make_adapter(session, graph_api=url)
        with pytest.raises(RetryLater):
            await adapter.send(KEY, Outbound("Chào bạn"))


async def test_a_wrong_page_token_is_a_configuration_error(graph: FakeGraphApi) -> None:
    async with aiohttp.ClientSession() as session:
        adapter = make_adapter(session, graph_api=graph.url, pages={PAGE: (DISTRICT, "stale")})
        with pytest.raises(ConfigurationError) as raised:
            await adapter.send(KEY, Outbound("Chào bạn"))
    assert "190" in str(raised.value)
    assert "stale" not in str(raised.value)


async def test_a_failure_midway_raises_after_the_parts_already_delivered(
    live: MessengerAdapter, graph: FakeGraphApi
) -> None:
    outbound = Outbound("Chào bạn.", image="media/a.png")
    graph.answer_next(200, {"recipient_id": USER, "message_id": "m_1"})
    graph.fail_next("temporary")
    with pytest.raises(RetryLater):
        await live.send(KEY, outbound)
    assert len(graph.sends) == 2


async def test_sending_for_a_district_without_a_page_is_a_configuration_error(
    live: MessengerAdapter, graph: FakeGraphApi
) -> None:
    with pytest.raises(ConfigurationError, match="binh-tan"):
        await live.send(ConversationKey("binh-tan", Channel.MESSENGER, USER), Outbound("Chào"))
    assert graph.requests == []


# --- Page setup --------------------------------------------------------------------------------


async def test_subscribe_app_subscribes_every_field_loa_needs(
    live: MessengerAdapter, graph: FakeGraphApi
) -> None:
    await live.subscribe_app(PAGE)
    assert graph.subscriptions[PAGE] == list(SUBSCRIBED_FIELDS)
    assert graph.requests[-1].path == f"/{GRAPH_API_VERSION}/{PAGE}/subscribed_apps"
    assert await live.subscribed_fields(PAGE) == SUBSCRIBED_FIELDS


async def test_subscribed_fields_is_empty_when_meta_dropped_the_subscription(
    live: MessengerAdapter, graph: FakeGraphApi
) -> None:
    assert await live.subscribed_fields(PAGE) == ()


async def test_subscribe_app_errors_are_mapped(live: MessengerAdapter, graph: FakeGraphApi) -> None:
    graph.fail_next("permission")
    with pytest.raises(ConfigurationError):
        await live.subscribe_app(PAGE)
    with pytest.raises(ConfigurationError, match="chưa được cấu hình"):
        await live.subscribe_app("404404")


async def test_set_profile_sets_get_started_greeting_and_menu(
    live: MessengerAdapter, graph: FakeGraphApi
) -> None:
    menu = (Choice("Đăng ký", "MENU:dang_ky"), Choice("Kết quả của tôi", "MENU:ket_qua"))
    await live.set_profile(PAGE, "GET_STARTED", "Chào {{user_first_name}}!", menu)
    profile = graph.profiles[TOKEN]
    assert profile["get_started"] == {"payload": "GET_STARTED"}
    assert profile["greeting"] == [{"locale": "default", "text": "Chào {{user_first_name}}!"}]
    [persistent] = profile["persistent_menu"]
    assert persistent["call_to_actions"] == [
        {"type": "postback", "title": "Đăng ký", "payload": "MENU:dang_ky"},
        {"type": "postback", "title": "Kết quả của tôi", "payload": "MENU:ket_qua"},
    ]


@pytest.mark.parametrize(
    ("greeting", "menu"),
    [
        ("x" * 161, ()),
        (None, tuple(Choice(f"Mục {n}", f"M{n}") for n in range(21))),
        (None, (Choice("Một tiêu đề rất dài quá ba mươi ký tự", "M"),)),
    ],
)
async def test_set_profile_refuses_what_meta_would_refuse_before_calling(
    live: MessengerAdapter, graph: FakeGraphApi, greeting: str | None, menu: tuple[Choice, ...]
) -> None:
    with pytest.raises(BadRequest):
        await live.set_profile(PAGE, "GET_STARTED", greeting, menu)
    assert graph.requests == []
