"""Zalo Bot API adapter: the secret-token header, parsing both envelopes, rendering without
buttons, sending against a local fake Bot API."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from adapters.base import (
    AdapterError,
    BadRequest,
    ConfigurationError,
    RecipientUnreachable,
    RetryLater,
)
from adapters.textsplit import units
from adapters.zalobot import MAX_TEXT, ZaloBotAdapter, render
from flows.vocab import Channel, Choice, ConversationKey, InboundKind, Outbound
from tests.adapters.platform_fixtures import event, header, raw
from tests.fakes.zalobot_api import FakeZaloBotApi

SECRET = "fake-zalobot-secret-0001"
TOKEN = "1234567890:fake-zalobot-token"
DISTRICT = "tan-phu"
USER = "0f0f0f0f0f0f0f0f0f01"
KEY = ConversationKey(DISTRICT, Channel.ZALOBOT, USER)

FIXTURES = [
    "zalobot_image.json",
    "zalobot_sticker.json",
    "zalobot_text.json",
    "zalobot_text_wrapped.json",
    "zalobot_unsupported.json",
]




def bot(**kwargs: Any) -> ZaloBotAdapter:
    kwargs.setdefault("token", TOKEN)
    kwargs.setdefault("secret_token", SECRET)
    return ZaloBotAdapter(DISTRICT, **kwargs)


def one(data: dict[str, Any] | bytes) -> Any:
    body = data if isinstance(data, bytes) else json.dumps(data, ensure_ascii=False).encode()
    parsed = bot().parse(body)
    assert len(parsed) == 1, parsed
    return parsed[0]


def with_text(text: str) -> dict[str, Any]:
    data = event("zalobot_text.json")
    data["message"]["text"] = text
    return data


# --- verify ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURES)
def test_every_fixture_verifies_with_its_recorded_header(name: str) -> None:
    assert bot().verify(raw(name), header(name))


@pytest.mark.parametrize("name", FIXTURES)
def test_a_tampered_token_fails(name: str) -> None:
    # the Bot API signs nothing: the secret header is the whole proof, so tamper with it
    ((field, value),) = header(name).items()
    assert not bot().verify(raw(name), {field: value[:-1] + "2"})
    assert not bot().verify(raw(name), {field: value + "x"})


@pytest.mark.parametrize("name", FIXTURES)
def test_a_missing_token_fails(name: str) -> None:
    assert not bot().verify(raw(name), {})


def test_header_name_is_case_insensitive_and_no_secret_fails_closed() -> None:
    assert bot().verify(b"{}", {"x-bot-api-secret-token": SECRET})
    assert not bot(secret_token=None).verify(b"{}", {"X-Bot-Api-Secret-Token": ""})
    assert not bot().verify(b"{}", {"X-Bot-Api-Secret-Token": "ẞ" * 24})


# --- parse -----------------------------------------------------------------------------------


def test_text_unwrapped() -> None:
    inbound = one(raw("zalobot_text.json"))
    assert inbound.kind is InboundKind.TEXT
    assert inbound.channel is Channel.ZALOBOT
    assert inbound.district == DISTRICT
    assert inbound.user_id == USER
    assert inbound.text == "Em muốn đăng ký tham gia"
    assert inbound.message_id == "0badc0de000000000001"
    assert inbound.timestamp == datetime(2026, 3, 3, 3, 0, tzinfo=UTC)


def test_text_in_the_documented_envelope() -> None:
    inbound = one(raw("zalobot_text_wrapped.json"))
    assert inbound.kind is InboundKind.TEXT
    assert inbound.text == "dang ky"
    assert inbound.message_id == "0badc0de000000000002"
    assert inbound.user_id == USER


def test_decomposed_text_is_nfc() -> None:
    inbound = one(with_text(unicodedata.normalize("NFD", "Họ và tên")))
    assert inbound.text == "Họ và tên"
    assert unicodedata.is_normalized("NFC", inbound.text)


@pytest.mark.parametrize(
    ("text", "ref"),
    [("#huyhieuso", "huyhieuso"), ("/start cds_2023", "cds_2023"), ("/start", None)],
)
def test_start_codes(text: str, ref: str | None) -> None:
    inbound = one(with_text(text))
    assert inbound.kind is InboundKind.START
    assert inbound.ref == ref


@pytest.mark.parametrize("text", ["#đăng ký", "/started", "# huyhieuso"])
def test_lookalikes_stay_text(text: str) -> None:
    assert one(with_text(text)).kind is InboundKind.TEXT


def test_image_reads_photo_url_and_the_documented_photo() -> None:
    inbound = one(raw("zalobot_image.json"))
    assert inbound.kind is InboundKind.IMAGE
    assert inbound.text == "ảnh xác nhận nộp bài"
    (attachment,) = inbound.attachments
    assert attachment.url == "https://f20-zpc.zdn.vn/jpg/FAKE0000000000000003/screenshot.jpg"
    assert attachment.mime == "image/jpeg"
    data = event("zalobot_image.json")
    data["message"]["photo"] = data["message"].pop("photo_url").replace(".jpg", ".png")
    assert one(data).attachments[0].mime == "image/png"
    del data["message"]["photo"]
    assert one(data).kind is InboundKind.UNSUPPORTED  # an image we cannot fetch is no evidence


def test_sticker() -> None:
    inbound = one(raw("zalobot_sticker.json"))
    assert inbound.kind is InboundKind.STICKER
    (attachment,) = inbound.attachments
    assert attachment.unique_id == "46991"
    assert attachment.url is not None and "emoticon" in attachment.url


def test_unsupported_and_voice() -> None:
    inbound = one(raw("zalobot_unsupported.json"))
    assert inbound.kind is InboundKind.UNSUPPORTED
    assert inbound.message_id == "0badc0de000000000005"
    data = event("zalobot_unsupported.json")
    data["event_name"] = "message.voice.received"
    data["message"]["voice_url"] = "https://f1.zdn.vn/voice.aac"
    voice = one(data)
    assert voice.kind is InboundKind.UNSUPPORTED
    assert voice.attachments[0].mime == "audio/aac"


def test_groups_bots_refusals_and_malformed_bodies_yield_nothing() -> None:
    data = event("zalobot_text.json")
    data["message"]["chat"]["chat_type"] = "GROUP"
    assert bot().parse(json.dumps(data).encode()) == []
    data = event("zalobot_text.json")
    data["message"]["from"]["is_bot"] = True
    assert bot().parse(json.dumps(data).encode()) == []
    data = event("zalobot_text.json")
    del data["message"]["message_id"]
    assert bot().parse(json.dumps(data).encode()) == []
    assert bot().parse(b'{"ok": false, "error_code": 408}') == []
    assert bot().parse(b"not json") == []
    assert bot().parse(b"[]") == []


# --- render ----------------------------------------------------------------------------------

SENTENCE = "Bạn mở ứng dụng Thanh niên Việt Nam, vào mục Mã QR của tôi và chụp màn hình nhé! "


def test_choices_are_always_numbered() -> None:
    ((method, body),) = render(
        Outbound("Bạn đồng ý chứ?", choices=(Choice("Có", "y"), Choice("Không", "n")))
    )
    assert method == "sendMessage"
    lines = body["text"].splitlines()
    assert lines[0] == "Bạn đồng ý chứ?"
    assert "1. Có" in lines and "2. Không" in lines


def test_long_text_splits_at_sentences() -> None:
    calls = render(Outbound(SENTENCE * 60))
    assert len(calls) >= 3
    for method, body in calls:
        assert method == "sendMessage"
        assert units(body["text"]) <= MAX_TEXT
        assert body["text"].endswith("nhé!")
    assert " ".join(b["text"] for _, b in calls) == (SENTENCE * 60).strip()


def test_photo_with_caption_or_before_long_text() -> None:
    url = "https://loa.example.org/media/cert1"
    ((method, body),) = render(Outbound("Giấy chứng nhận của bạn", image=url))
    assert (method, body) == ("sendPhoto", {"photo": url, "caption": "Giấy chứng nhận của bạn"})
    calls = render(Outbound(SENTENCE * 30, image=url))
    assert calls[0] == ("sendPhoto", {"photo": url})
    assert [m for m, _ in calls[1:]] == ["sendMessage"] * (len(calls) - 1)


def test_local_media_needs_a_public_url_and_files_become_links() -> None:
    with pytest.raises(ConfigurationError, match="LOA_PUBLIC_URL"):
        render(Outbound("", image="media/mau.png"))
    calls = render(
        Outbound("Mẫu đơn", file="media/don.pdf"),
        media_url=lambda path: "https://loa.example.org/media/h1",
    )
    assert calls == [
        ("sendMessage", {"text": "Tệp đính kèm: https://loa.example.org/media/h1"}),
        ("sendMessage", {"text": "Mẫu đơn"}),
    ]


# --- send against the fake -------------------------------------------------------------------


@pytest.fixture
async def api() -> AsyncIterator[FakeZaloBotApi]:
    async with FakeZaloBotApi(token=TOKEN) as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def live(api: FakeZaloBotApi, session: aiohttp.ClientSession, **kwargs: Any) -> ZaloBotAdapter:
    return bot(session=session, api_base=api.url, **kwargs)


async def test_send_calls_the_methods_in_order_with_chat_id(
    api: FakeZaloBotApi, session: aiohttp.ClientSession
) -> None:
    outbound = Outbound(SENTENCE * 30, image="https://loa.example.org/media/x")
    await live(api, session).send(KEY, outbound)
    assert api.calls == [(m, {"chat_id": USER, **b}) for m, b in render(outbound)]
    assert all(r.token == TOKEN for r in api.requests)


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (429, RetryLater),
        (408, RetryLater),
        (500, RetryLater),
        (401, ConfigurationError),
        (404, ConfigurationError),
        (403, RecipientUnreachable),
        (400, BadRequest),
        (418, BadRequest),
    ],
)
async def test_refusals_map_onto_the_delivery_error_tree(
    api: FakeZaloBotApi, session: aiohttp.ClientSession, code: int, error: type[AdapterError]
) -> None:
    api.fail_next(code)
    with pytest.raises(error, match=str(code)) as caught:
        await live(api, session).send(KEY, Outbound("Chào bạn"))
    assert type(caught.value) is error
    assert TOKEN not in str(caught.value)
    assert api.calls == []


async def test_rate_limit_carries_retry_after(
    api: FakeZaloBotApi, session: aiohttp.ClientSession
) -> None:
    api.fail_next(429, retry_after=3, status=429)
    with pytest.raises(RetryLater) as caught:
        await live(api, session).send(KEY, Outbound("a"))
    assert caught.value.retry_after == 3.0


async def test_wrong_token_is_a_configuration_error_without_the_token(
    api: FakeZaloBotApi, session: aiohttp.ClientSession
) -> None:
    wrong = live(api, session, token="999:wrong-token")
    with pytest.raises(ConfigurationError) as caught:
        await wrong.send(KEY, Outbound("a"))
    assert "wrong-token" not in str(caught.value)
    assert "wrong-token" not in repr(wrong)


async def test_the_fake_enforces_limits_the_renderer_respects(
    api: FakeZaloBotApi, session: aiohttp.ClientSession
) -> None:
    adapter = live(api, session)
    with pytest.raises(BadRequest):  # bypassing render: over the limit
        await adapter.call("sendMessage", {"chat_id": USER, "text": "a" * 2001})
    await adapter.send(KEY, Outbound("a" * 2001))
    assert [len(b["text"]) for _, b in api.calls] == [2000, 1]


async def test_5xx_pages_timeouts_and_dead_servers_are_retry_later(
    api: FakeZaloBotApi, session: aiohttp.ClientSession
) -> None:
    adapter = live(api, session, timeout=0.2)
    api.answer_next(502, b"<html>Bad Gateway</html>")
    with pytest.raises(RetryLater):
        await adapter.send(KEY, Outbound("a"))
    api.answer_next(200, b"<html>captive portal</html>")
    with pytest.raises(RetryLater):
        await adapter.send(KEY, Outbound("a"))
    api.delay_next(5)
    with pytest.raises(RetryLater, match=r"0\.2"):
        await adapter.send(KEY, Outbound("a"))
    async with FakeZaloBotApi() as gone:
        url = gone.url
    with pytest.raises(RetryLater) as caught:
        await bot(session=session, api_base=url).send(KEY, Outbound("a"))
    assert TOKEN not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_unconfigured_sending_and_empty_messages(session: aiohttp.ClientSession) -> None:
    with pytest.raises(ConfigurationError):
        await bot().send(KEY, Outbound("a"))
    with pytest.raises(BadRequest):
        await bot(session=session).send(KEY, Outbound(""))
