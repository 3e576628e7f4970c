"""Zalo OA adapter: signatures on the recorded webhook bodies, parsing, rendering within Zalo's
limits, sending against a local fake Open API, and the OAuth v4 token calls."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from adapters.base import (
    AdapterError,
    AuthExpired,
    BadRequest,
    ConfigurationError,
    OutsideWindow,
    RecipientUnreachable,
    RetryLater,
)
from adapters.textsplit import split_text, units
from adapters.zalo import (
    DEFAULT_PROMPT,
    MAX_TEXT,
    TokenPair,
    TokenRefused,
    ZaloAdapter,
    code_challenge,
    error_for,
    exchange_code,
    permission_url,
    refresh_tokens,
    render,
    signature,
    site_verification_meta,
    verifier_file_name,
    verifier_page,
)
from flows.vocab import Channel, Choice, ConversationKey, InboundKind, Outbound
from tests.adapters.platform_fixtures import event, header, raw
from tests.fakes.zalo_api import FakeZaloApi

APP_ID = "1111111111111111111"
OA_SECRET = "FakeOaSecretKey0000000"
APP_SECRET = "fake-app-secret"
OA_ID = "2222222222222222222"
USER = "3333333333333333333"
DISTRICT = "tan-phu"
KEY = ConversationKey(DISTRICT, Channel.ZALO, USER)

FIXTURES = [
    "zalo_follow.json",
    "zalo_oa_send_text_echo.json",
    "zalo_user_seen_message.json",
    "zalo_user_send_file.json",
    "zalo_user_send_image.json",
    "zalo_user_send_sticker.json",
    "zalo_user_send_text.json",
    "zalo_user_send_text_query_button.json",
    "zalo_user_submit_info.json",
]




class Tokens:
    """A token provider over the fake: `invalidated` refreshes once, like the real store will."""

    def __init__(
        self,
        access: str = "",
        refresh: str = "",
        session: aiohttp.ClientSession | None = None,
        oauth: str = "",
    ) -> None:
        self.access, self.refresh = access, refresh
        self.session, self.oauth = session, oauth
        self.invalidations: list[tuple[str, str]] = []

    async def access_token(self, oa_id: str) -> str:
        return self.access

    async def invalidated(self, oa_id: str, token: str) -> None:
        self.invalidations.append((oa_id, token))
        if token == self.access and self.session is not None:
            pair = await refresh_tokens(self.session, self.oauth, APP_ID, APP_SECRET, self.refresh)
            self.access, self.refresh = pair.access_token, pair.refresh_token


def adapter(tokens: Tokens | None = None, **kwargs: Any) -> ZaloAdapter:
    return ZaloAdapter(
        app_id=APP_ID,
        oa_secret_key=OA_SECRET,
        accounts={OA_ID: (DISTRICT, tokens or Tokens())},
        **kwargs,
    )


def body_of(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode()


def one(data: dict[str, Any] | bytes) -> Any:
    parsed = adapter().parse(data if isinstance(data, bytes) else body_of(data))
    assert len(parsed) == 1, parsed
    return parsed[0]


# --- verify ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURES)
def test_every_fixture_verifies_with_its_recorded_signature(name: str) -> None:
    assert adapter().verify(raw(name), header(name))


@pytest.mark.parametrize("name", FIXTURES)
def test_a_tampered_body_fails(name: str) -> None:
    body = raw(name)
    tampered = body.replace(b"3333333333333333333", b"3333333333333333334", 1)
    assert tampered != body
    assert not adapter().verify(tampered, header(name))


@pytest.mark.parametrize("name", FIXTURES)
def test_a_missing_signature_fails(name: str) -> None:
    assert not adapter().verify(raw(name), {})


def test_header_name_is_case_insensitive_and_value_must_carry_mac_prefix() -> None:
    name = "zalo_user_send_text.json"
    value = header(name)["X-ZEvent-Signature"]
    assert adapter().verify(raw(name), {"x-zevent-signature": value})
    assert not adapter().verify(raw(name), {"X-ZEvent-Signature": value.removeprefix("mac=")})


def test_wrong_secret_non_json_body_and_odd_header_fail_closed() -> None:
    name = "zalo_user_send_text.json"
    headers = header(name)
    wrong = ZaloAdapter(app_id=APP_ID, oa_secret_key="other", accounts={})
    assert not wrong.verify(raw(name), headers)
    unset = ZaloAdapter(app_id=APP_ID, oa_secret_key="", accounts={})
    assert not unset.verify(raw(name), headers)
    assert not adapter().verify(b"not json", headers)
    assert not adapter().verify(raw(name), {"X-ZEvent-Signature": "mac=ẞ" + "0" * 63})


def test_timestamp_comes_from_the_body() -> None:
    data = event("zalo_user_send_text.json")
    body = body_of(data)
    mac = signature(APP_ID, body, data["timestamp"], OA_SECRET)
    assert adapter().verify(body, {"X-ZEvent-Signature": f"mac={mac}"})
    # the same hash over a different timestamp than the body's does not verify
    other = signature(APP_ID, body, "1772456700001", OA_SECRET)
    assert not adapter().verify(body, {"X-ZEvent-Signature": f"mac={other}"})


def test_diagnose_names_the_variant_that_matches() -> None:
    body = raw("zalo_user_send_text.json")
    by_oa = hashlib.sha256(
        OA_ID.encode() + body + b"1772456700000" + OA_SECRET.encode()
    ).hexdigest()
    headers = {"X-ZEvent-Signature": f"mac={by_oa}"}
    assert not adapter().verify(body, headers)
    assert adapter().diagnose_signature(body, headers) == "oa_id+oa_secret_key+body_timestamp"
    by_app_secret = signature(APP_ID, body, "1772456700000", APP_SECRET)
    headers = {"X-ZEvent-Signature": f"mac={by_app_secret}"}
    assert adapter().diagnose_signature(body, headers) is None
    assert (
        adapter().diagnose_signature(body, headers, app_secret=APP_SECRET)
        == "app_id+app_secret+body_timestamp"
    )
    by_header_ts = signature(APP_ID, body, "1772456799999", OA_SECRET)
    headers = {"X-ZEvent-Signature": f"mac={by_header_ts}", "X-ZEvent-Timestamp": "1772456799999"}
    assert adapter().diagnose_signature(body, headers) == "app_id+oa_secret_key+header_timestamp"


# --- parse: the recorded fixtures ------------------------------------------------------------


def test_text() -> None:
    inbound = one(raw("zalo_user_send_text.json"))
    assert inbound.kind is InboundKind.TEXT
    assert inbound.channel is Channel.ZALO
    assert inbound.district == DISTRICT
    assert inbound.user_id == USER
    assert inbound.text == "Chào ad, em muốn đăng ký tham gia cuộc thi ạ"
    assert inbound.message_id == "f00dbabe0000000000a1"
    assert inbound.timestamp == datetime(2026, 3, 2, 13, 5, tzinfo=UTC)


def test_decomposed_text_is_normalised_to_nfc() -> None:
    data = event("zalo_user_send_text.json")
    data["message"]["text"] = unicodedata.normalize("NFD", "Đăng ký")
    inbound = one(data)
    assert inbound.text == "Đăng ký"
    assert unicodedata.is_normalized("NFC", inbound.text)


def test_query_button_text_is_a_start_with_its_ref() -> None:
    inbound = one(raw("zalo_user_send_text_query_button.json"))
    assert inbound.kind is InboundKind.START
    assert inbound.ref == "dangky"
    assert inbound.message_id == "f00dbabe0000000000a2"


@pytest.mark.parametrize("text", ["#", "# dangky", "#đăng_ký", "#" + "a" * 65, "dangky"])
def test_hash_text_that_is_not_a_ref_stays_text(text: str) -> None:
    data = event("zalo_user_send_text_query_button.json")
    data["message"]["text"] = text
    inbound = one(data)
    assert inbound.kind is InboundKind.TEXT
    assert inbound.ref is None


def test_image_with_caption() -> None:
    inbound = one(raw("zalo_user_send_image.json"))
    assert inbound.kind is InboundKind.IMAGE
    assert inbound.text == "anh chup man hinh xac nhan nop bai"
    (attachment,) = inbound.attachments
    assert attachment.url == "https://f21-zpc.zdn.vn/jpg/FAKE0000000000000001/screenshot.jpg"
    assert attachment.mime == "image/jpeg"
    assert inbound.message_id == "f00dbabe0000000000a3"


def test_image_event_with_two_attachments_keeps_both() -> None:
    data = event("zalo_user_send_image.json")
    second = {"type": "image", "payload": {"url": "https://f21-zpc.zdn.vn/png/FAKE2/b.png"}}
    data["message"]["attachments"].append(second)
    inbound = one(data)
    assert [a.mime for a in inbound.attachments] == ["image/jpeg", "image/png"]


def test_image_event_without_url_is_unsupported_not_evidence() -> None:
    data = event("zalo_user_send_image.json")
    data["message"]["attachments"] = [{"type": "image", "payload": {}}]
    assert one(data).kind is InboundKind.UNSUPPORTED


def test_sticker_and_gif_are_stickers() -> None:
    inbound = one(raw("zalo_user_send_sticker.json"))
    assert inbound.kind is InboundKind.STICKER
    assert inbound.attachments[0].unique_id == "46991"
    data = event("zalo_user_send_image.json")
    data["event_name"] = "user_send_gif"
    data["message"]["attachments"][0]["type"] = "gif"
    gif = one(data)
    assert gif.kind is InboundKind.STICKER
    assert gif.attachments[0].mime == "image/gif"


def test_file() -> None:
    inbound = one(raw("zalo_user_send_file.json"))
    assert inbound.kind is InboundKind.FILE
    (attachment,) = inbound.attachments
    assert attachment.name == "Đơn đăng ký - Nguyễn Lan.pdf"
    assert attachment.size == 245760
    assert attachment.mime == "application/pdf"
    assert attachment.unique_id == "0123456789abcdef0123456789abcdef"
    assert attachment.url is not None and attachment.url.endswith("don-dang-ky.pdf")


def test_follow_is_a_start_without_ref_keyed_by_follower_and_time() -> None:
    inbound = one(raw("zalo_follow.json"))
    assert inbound.kind is InboundKind.START
    assert inbound.ref is None
    assert inbound.user_id == USER
    assert inbound.message_id == "follow:3333333333333333333:1772456100000"
    assert inbound.timestamp == datetime(2026, 3, 2, 12, 55, tzinfo=UTC)


def test_submit_info_is_a_contact_with_its_fields() -> None:
    inbound = one(raw("zalo_user_submit_info.json"))
    assert inbound.kind is InboundKind.CONTACT
    data = dict(inbound.data)
    assert data["name"] == "Nguyễn Thị Lan"
    assert data["phone"] == "84900000001"
    assert data["district"] == "Quận 1"
    assert inbound.text == "84900000001"
    # no msg_id on this event: a stable key from sender and time, equal across retries
    assert inbound.message_id == one(raw("zalo_user_submit_info.json")).message_id
    assert USER in inbound.message_id and "1772456900000" in inbound.message_id


def test_submit_info_newer_shape_is_flattened() -> None:
    data = event("zalo_user_submit_info.json")
    data["info"] = {
        "name": "Trần Văn B",
        "phone": "84900000002",
        "user_dob": "01/02/2005",
        "gender": "male",
        "full_address": {"address": "12 Lê Lợi", "ward": "Phường 4", "city": "Đà Lạt"},
    }
    fields = dict(one(data).data)
    assert fields["user_dob"] == "01/02/2005"
    assert fields["full_address.ward"] == "Phường 4"
    assert fields["full_address.city"] == "Đà Lạt"


@pytest.mark.parametrize("name", ["zalo_user_seen_message.json", "zalo_oa_send_text_echo.json"])
def test_receipts_and_echoes_are_not_conversation_input(name: str) -> None:
    assert adapter().parse(raw(name)) == []


def test_location_audio_and_anonymous() -> None:
    data = event("zalo_user_send_text.json")
    data["event_name"] = "user_send_location"
    data["message"] = {
        "msg_id": "loc1",
        "attachments": [
            {"type": "location", "payload": {"coordinates": {"latitude": 10.8, "longitude": 106.6}}}
        ],
    }
    location = one(data)
    assert location.kind is InboundKind.LOCATION
    assert dict(location.data) == {"latitude": "10.8", "longitude": "106.6"}
    data["event_name"] = "user_send_audio"
    data["message"] = {
        "msg_id": "au1",
        "attachments": [{"type": "audio", "payload": {"url": "https://f1.zdn.vn/a.aac"}}],
    }
    assert one(data).kind is InboundKind.UNSUPPORTED
    data["event_name"] = "anonymous_send_text"
    assert adapter().parse(body_of(data)) == []


def test_unknown_oa_and_malformed_bodies_yield_nothing() -> None:
    data = event("zalo_user_send_text.json")
    data["recipient"]["id"] = "9999"
    assert adapter().parse(body_of(data)) == []
    del data["sender"]
    data["recipient"]["id"] = OA_ID
    assert adapter().parse(body_of(data)) == []
    assert adapter().parse(b"\xff not json") == []
    assert adapter().parse(b"[1, 2]") == []


# --- echoes ----------------------------------------------------------------------------------


def test_echo_not_sent_by_us_is_treated_as_human() -> None:
    (echo,) = adapter().parse_echoes(raw("zalo_oa_send_text_echo.json"))
    assert echo.district == DISTRICT
    assert echo.user_id == USER
    assert echo.message_id == "f00dbabe0000000000b1"
    assert echo.event == "oa_send_text"
    assert echo.text.startswith("Chào bạn!")
    assert echo.admin_id is None
    assert echo.by_human
    assert adapter().parse_echoes(raw("zalo_user_send_text.json")) == []


def test_echo_with_admin_id_is_human() -> None:
    data = event("zalo_oa_send_text_echo.json")
    data["sender"]["admin_id"] = "5555"
    (echo,) = adapter().parse_echoes(body_of(data))
    assert echo.admin_id == "5555"
    assert echo.by_human


# --- render ----------------------------------------------------------------------------------

SENTENCE = "Bạn hãy đăng nhập VNeID, chọn mục Thông tin cá nhân và chụp màn hình gửi cho mình nhé. "


def test_long_vietnamese_text_splits_at_sentences_within_the_limit() -> None:
    text = unicodedata.normalize("NFD", SENTENCE * 60)  # ~5,200 characters, decomposed
    messages = render(Outbound(text))
    assert len(messages) >= 3
    for message in messages:
        part = message["text"]
        assert units(part) <= MAX_TEXT
        assert unicodedata.is_normalized("NFC", part)
        assert part.endswith("nhé.")  # cut at a sentence end, never mid-sentence
    joined = " ".join(m["text"] for m in messages)
    assert joined == unicodedata.normalize("NFC", text).strip()


def test_split_keeps_abbreviations_with_their_name() -> None:
    text = "Xin chào các bạn đoàn viên. Thành Đoàn TP. Hồ Chí Minh gửi lời chào."
    assert split_text(text, 45) == [
        "Xin chào các bạn đoàn viên.",
        "Thành Đoàn TP. Hồ Chí Minh gửi lời chào.",
    ]


def test_split_counts_emoji_as_two_units_and_hard_cuts_a_giant_word() -> None:
    parts = split_text("😀" * 1500, MAX_TEXT)
    assert len(parts) == 2 and all(units(p) <= MAX_TEXT for p in parts)
    assert "".join(parts) == "😀" * 1500
    word = "a" * 4500
    assert [len(p) for p in split_text(word, MAX_TEXT)] == [2000, 2000, 500]


def test_up_to_five_choices_are_query_buttons_whose_payload_is_the_title() -> None:
    choices = tuple(Choice(t, f"p{i}") for i, t in enumerate(["Có", "Không", "Để sau"]))
    (message,) = render(Outbound("Bạn đồng ý chứ?", choices=choices))
    assert message["text"] == "Bạn đồng ý chứ?"
    buttons = message["attachment"]["payload"]["buttons"]
    assert [b["title"] for b in buttons] == ["Có", "Không", "Để sau"]
    assert all(b["type"] == "oa.query.show" and b["payload"] == b["title"] for b in buttons)


def test_a_tapped_button_comes_back_as_its_title_text() -> None:
    (message,) = render(Outbound("Chọn", choices=(Choice("Thực hiện thôi nào", "go"),)))
    payload = message["attachment"]["payload"]["buttons"][0]["payload"]
    data = event("zalo_user_send_text.json")
    data["message"]["text"] = payload
    inbound = one(data)
    assert inbound.kind is InboundKind.TEXT and inbound.text == "Thực hiện thôi nào"


@pytest.mark.parametrize(
    "titles",
    [
        [f"Lựa chọn {i}" for i in range(6)],  # more than 5
        ["Có", "K" * 101],  # a title Zalo cannot show
        ["#dangky", "Không"],  # would come back as a START
    ],
)
def test_choices_zalo_cannot_show_degrade_to_a_numbered_list(titles: list[str]) -> None:
    choices = tuple(Choice(t, t) for t in titles)
    (message,) = render(Outbound("Bạn chọn gì?", choices=choices))
    assert "attachment" not in message
    lines = message["text"].splitlines()
    assert lines[0] == "Bạn chọn gì?"
    for i, title in enumerate(titles, 1):
        assert f"{i}. {title}" in lines


def test_buttons_go_on_the_last_part_of_a_long_text() -> None:
    messages = render(Outbound(SENTENCE * 60, choices=(Choice("Có", "y"), Choice("Không", "n"))))
    assert len(messages) >= 3
    assert all("attachment" not in m for m in messages[:-1])
    assert len(messages[-1]["attachment"]["payload"]["buttons"]) == 2


def test_buttons_without_text_get_a_prompt() -> None:
    (message,) = render(Outbound("", choices=(Choice("Có", "y"),)))
    assert message["text"] == DEFAULT_PROMPT


def test_image_by_url_with_caption_or_before_buttons() -> None:
    url = "https://loa.example.org/media/abc123"
    (message,) = render(Outbound("Giấy chứng nhận của bạn", image=url))
    assert message["text"] == "Giấy chứng nhận của bạn"
    element = message["attachment"]["payload"]["elements"][0]
    assert message["attachment"]["payload"]["template_type"] == "media"
    assert element == {"media_type": "image", "url": url}
    first, second = render(Outbound("Ảnh mẫu", image=url, choices=(Choice("Đã hiểu", "ok"),)))
    assert "text" not in first and first["attachment"]["payload"]["elements"][0]["url"] == url
    assert second["text"] == "Ảnh mẫu" and "buttons" in second["attachment"]["payload"]


def test_local_image_goes_through_media_url_and_needs_it() -> None:
    resolved = render(
        Outbound("", image="media/mau-vneid.png"),
        media_url=lambda path: f"https://loa.example.org/media/h-{path.rsplit('/', 1)[-1]}",
    )
    element = resolved[0]["attachment"]["payload"]["elements"][0]
    assert element["url"] == "https://loa.example.org/media/h-mau-vneid.png"
    with pytest.raises(ConfigurationError, match="LOA_PUBLIC_URL"):
        render(Outbound("", image="media/mau-vneid.png"))


def test_file_becomes_a_link() -> None:
    messages = render(Outbound("Mẫu đơn đây nhé.", file="https://loa.example.org/media/f1"))
    assert messages[0]["text"] == "Tệp đính kèm: https://loa.example.org/media/f1"
    assert messages[1]["text"] == "Mẫu đơn đây nhé."


# --- send against the fake -------------------------------------------------------------------


@pytest.fixture
async def zalo() -> AsyncIterator[FakeZaloApi]:
    async with FakeZaloApi(app_id=APP_ID, app_secret=APP_SECRET) as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def live(zalo: FakeZaloApi, session: aiohttp.ClientSession, **kwargs: Any) -> ZaloAdapter:
    access, refresh = zalo.grant(OA_ID)
    tokens = Tokens(access, refresh, session, zalo.oauth_url)
    return adapter(tokens, session=session, api_base=zalo.url, **kwargs)


async def test_send_posts_each_part_with_the_token_header(
    zalo: FakeZaloApi, session: aiohttp.ClientSession
) -> None:
    sent: list[tuple[ConversationKey, str]] = []

    async def on_sent(key: ConversationKey, message_id: str) -> None:
        sent.append((key, message_id))

    oa = live(zalo, session, on_sent=on_sent)
    outbound = Outbound(SENTENCE * 30, choices=(Choice("Có", "y"), Choice("Không", "n")))
    await oa.send(KEY, outbound)
    assert zalo.messages == render(outbound)
    assert len(zalo.sends) == len(render(outbound)) == 2
    for request in zalo.sends:
        assert request.headers["access_token"].startswith(f"access-{OA_ID}-")
        assert request.headers["Content-Type"] == "application/json"
        assert request.body["recipient"] == {"user_id": USER}
    assert [key for key, _ in sent] == [KEY, KEY]
    assert len({message_id for _, message_id in sent}) == 2


async def test_echo_of_our_own_send_is_not_human(
    zalo: FakeZaloApi, session: aiohttp.ClientSession
) -> None:
    oa = live(zalo, session)
    message_id = await oa.send_message(KEY, {"text": "Chào bạn"})
    assert message_id and oa.sent_recently(message_id)
    data = event("zalo_oa_send_text_echo.json")
    data["message"]["msg_id"] = message_id
    (echo,) = oa.parse_echoes(body_of(data))
    assert echo.sent_by_us and not echo.by_human


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (-32, RetryLater),
        (-100, RetryLater),
        (-216, AuthExpired),
        (-220, AuthExpired),
        (-230, OutsideWindow),
        (-232, OutsideWindow),
        (-213, RecipientUnreachable),
        (-217, RecipientUnreachable),
        (-227, RecipientUnreachable),
        (-244, RecipientUnreachable),
        (-209, ConfigurationError),
        (-212, ConfigurationError),
        (-221, ConfigurationError),
        (-223, ConfigurationError),
        (-224, ConfigurationError),
        (-240, ConfigurationError),
        (-242, ConfigurationError),
        (-320, ConfigurationError),
        (-321, ConfigurationError),
        (-211, ConfigurationError),
        (-201, BadRequest),
        (-210, BadRequest),
        (-233, BadRequest),
        (-248, BadRequest),
        (-999, BadRequest),
    ],
)
async def test_zalo_error_codes_map_onto_the_delivery_error_tree(
    zalo: FakeZaloApi, session: aiohttp.ClientSession, code: int, error: type[AdapterError]
) -> None:
    oa = live(zalo, session)
    zalo.fail_next(code)
    with pytest.raises(error, match=str(code)) as caught:
        await oa.send(KEY, Outbound("Chào bạn"))
    assert type(caught.value) is error
    assert zalo.messages == []


async def test_a_rejected_token_is_reported_then_the_retry_succeeds(
    zalo: FakeZaloApi, session: aiohttp.ClientSession
) -> None:
    oa = live(zalo, session)
    tokens = oa._accounts[OA_ID][1]
    assert isinstance(tokens, Tokens)
    old = tokens.access
    zalo.revoke(old)  # Zalo stopped accepting it (-216 from the fake's own check)
    with pytest.raises(AuthExpired):
        await oa.send(KEY, Outbound("Chào bạn"))
    assert tokens.invalidations == [(OA_ID, old)]
    assert tokens.access != old
    await oa.send(KEY, Outbound("Chào bạn"))
    assert zalo.messages == [{"text": "Chào bạn"}]
    assert zalo.sends[-1].headers["access_token"] == tokens.access


async def test_http_5xx_429_and_non_json_are_retry_later(
    zalo: FakeZaloApi, session: aiohttp.ClientSession
) -> None:
    oa = live(zalo, session)
    zalo.answer_next(503, b"<html>Service Unavailable</html>")
    with pytest.raises(RetryLater):
        await oa.send(KEY, Outbound("a"))
    zalo.answer_next(429, {"error": -32}, {"Retry-After": "7"})
    with pytest.raises(RetryLater) as caught:
        await oa.send(KEY, Outbound("a"))
    assert caught.value.retry_after == 7.0
    zalo.answer_next(200, b"<html>proxy</html>")
    with pytest.raises(RetryLater):
        await oa.send(KEY, Outbound("a"))
    zalo.answer_next(404, b"not found")
    with pytest.raises(ConfigurationError):
        await oa.send(KEY, Outbound("a"))
    assert zalo.messages == []


async def test_a_slow_zalo_is_retry_later(
    zalo: FakeZaloApi, session: aiohttp.ClientSession
) -> None:
    oa = live(zalo, session, timeout=0.2)
    zalo.delay_next(5)
    started = datetime.now(UTC)
    with pytest.raises(RetryLater, match=r"0\.2"):
        await oa.send(KEY, Outbound("a"))
    assert (datetime.now(UTC) - started).total_seconds() < 2


async def test_an_unreachable_api_is_retry_later(session: aiohttp.ClientSession) -> None:
    async with FakeZaloApi() as gone:
        url = gone.url
    oa = adapter(Tokens("t"), session=session, api_base=url)
    with pytest.raises(RetryLater):
        await oa.send(KEY, Outbound("a"))


async def test_configuration_problems_are_reported(session: aiohttp.ClientSession) -> None:
    with pytest.raises(ConfigurationError, match="khac-quan"):
        await adapter(session=session).send(
            ConversationKey("khac-quan", Channel.ZALO, USER), Outbound("a")
        )
    with pytest.raises(ConfigurationError, match="session"):
        await adapter().send(KEY, Outbound("a"))
    with pytest.raises(BadRequest):
        await adapter(session=session).send(KEY, Outbound(""))
    with pytest.raises(ValueError, match=DISTRICT):
        ZaloAdapter(
            app_id=APP_ID,
            oa_secret_key=OA_SECRET,
            accounts={"1": (DISTRICT, Tokens()), "2": (DISTRICT, Tokens())},
        )


def test_night_refusal_waits_until_six_in_vietnam() -> None:
    error = error_for(-234, now=datetime(2026, 3, 2, 16, 0, tzinfo=UTC))  # 23:00 in Vietnam
    assert isinstance(error, RetryLater)
    assert error.retry_after == 7 * 3600


# --- OAuth v4 --------------------------------------------------------------------------------


async def test_refresh_rotates_the_pair_and_spends_the_old_refresh_token(
    zalo: FakeZaloApi, session: aiohttp.ClientSession
) -> None:
    access, refresh = zalo.grant(OA_ID)
    pair = await refresh_tokens(session, zalo.oauth_url, APP_ID, APP_SECRET, refresh)
    assert isinstance(pair, TokenPair)
    assert pair.access_token != access and pair.refresh_token != refresh
    assert pair.expires_in == 90_000
    request = zalo.requests[-1]
    assert request.path == "/v4/oa/access_token"
    assert request.headers["secret_key"] == APP_SECRET
    assert request.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert request.body == {
        "refresh_token": refresh,
        "app_id": APP_ID,
        "grant_type": "refresh_token",
    }
    with pytest.raises(TokenRefused, match="-14014") as caught:
        await refresh_tokens(session, zalo.oauth_url, APP_ID, APP_SECRET, refresh)
    assert caught.value.code == -14014
    assert isinstance(caught.value, ConfigurationError)
    # the access token the refresh replaced no longer works
    oa = adapter(Tokens(access), session=session, api_base=zalo.url)
    with pytest.raises(AuthExpired):
        await oa.send(KEY, Outbound("a"))
    await adapter(Tokens(pair.access_token), session=session, api_base=zalo.url).send(
        KEY, Outbound("a")
    )
    assert zalo.messages == [{"text": "a"}]


async def test_refresh_with_the_wrong_app_secret_is_refused(
    zalo: FakeZaloApi, session: aiohttp.ClientSession
) -> None:
    _, refresh = zalo.grant(OA_ID)
    with pytest.raises(TokenRefused):
        await refresh_tokens(session, zalo.oauth_url, APP_ID, "wrong", refresh)


async def test_refresh_transport_failure_is_retry_later(
    zalo: FakeZaloApi, session: aiohttp.ClientSession
) -> None:
    _, refresh = zalo.grant(OA_ID)
    zalo.answer_next(502, b"bad gateway", path="/v4/oa/access_token")
    with pytest.raises(RetryLater):
        await refresh_tokens(session, zalo.oauth_url, APP_ID, APP_SECRET, refresh)


async def test_exchange_code_with_pkce(zalo: FakeZaloApi, session: aiohttp.ClientSession) -> None:
    verifier = "v" * 43
    code = zalo.issue_code(OA_ID, verifier)
    with pytest.raises(TokenRefused):
        await exchange_code(
            session, zalo.oauth_url, APP_ID, APP_SECRET, code, code_verifier="w" * 43
        )
    code = zalo.issue_code(OA_ID, verifier)
    pair = await exchange_code(
        session, zalo.oauth_url, APP_ID, APP_SECRET, code, code_verifier=verifier
    )
    assert pair.access_token in zalo.access
    assert zalo.requests[-1].body["grant_type"] == "authorization_code"
    with pytest.raises(TokenRefused):  # a code is single use
        await exchange_code(
            session, zalo.oauth_url, APP_ID, APP_SECRET, code, code_verifier=verifier
        )


def test_pkce_challenge_and_permission_url() -> None:
    # RFC 7636, appendix B
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    url = permission_url(APP_ID, "https://loa.example.org/oauth/zalo/callback", "abc", state="s1")
    assert url.startswith("https://oauth.zaloapp.com/v4/oa/permission?")
    assert f"app_id={APP_ID}" in url
    assert "redirect_uri=https%3A%2F%2Floa.example.org%2Foauth%2Fzalo%2Fcallback" in url
    assert "code_challenge=abc" in url and "state=s1" in url


# --- domain verification ---------------------------------------------------------------------


def test_domain_verification_tag_file_and_page() -> None:
    code = "SeEEB8ES51jdZCu-hOfK5MQ3rGwAyW9ICpW"
    meta = site_verification_meta([code, '"><script>alert(1)</script>', "short"])
    assert meta == f'<meta name="zalo-platform-site-verification" content="{code}" />'
    assert verifier_file_name(code) == f"zalo_verifier{code}.html"
    page = verifier_page(code)
    assert f'<meta name="zalo-platform-site-verification" content="{code}" />' in page
    assert f"<body>{code}</body>" in page
    with pytest.raises(ValueError):
        verifier_file_name("../../etc/passwd")
