"""The Telegram transports (aiogram, and the plain aiohttp fallback) against the fake Bot API:
what they send, uploads of local media, and refusals mapped onto the delivery error tree."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.base import ConfigurationError, RecipientUnreachable, RetryLater
from adapters.telegram import TelegramAdapter
from adapters.telegram_transport import AiogramTransport, HttpTransport
from flows.vocab import Channel, Choice, ConversationKey, Outbound
from tests.fakes.telegram_api import FakeTelegramApi

from .conftest import TG_TOKEN, png

KEY = ConversationKey("tan-phu", Channel.TELEGRAM, "7000000001")


@pytest.fixture(params=["aiogram", "http"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegramApi]:
    async with FakeTelegramApi(token=TG_TOKEN) as fake:
        yield fake


def _transport(kind: str, api: str, tmp_path: Path, token: str = TG_TOKEN) -> Any:
    sample = tmp_path / "mau.png"
    sample.write_bytes(png("mau"))

    def local(reference: str) -> Path | None:
        return sample if reference == "/media/mau.png" else None

    cls = AiogramTransport if kind == "aiogram" else HttpTransport
    return cls(token, api_base=api, local_file=local)


async def test_sends_text_keyboards_and_uploads(
    kind: str, telegram: FakeTelegramApi, tmp_path: Path
) -> None:
    transport = _transport(kind, telegram.url, tmp_path)
    adapter = TelegramAdapter("tan-phu", transport=transport)
    try:
        choices = (Choice("Đồng ý", "y"), Choice("Không", "n"))
        await adapter.send(KEY, Outbound("Bạn đồng ý chứ?", choices))
        await adapter.send(KEY, Outbound("Ảnh mẫu", image="/media/mau.png"))
        await adapter.send(KEY, Outbound("Ảnh từ mạng", image="https://example.vn/a.png"))
        await adapter.answer_callback("cbq-7")
    finally:
        await transport.close()
    first, photo, by_url = telegram.sent()
    assert first["chat_id"] == 7000000001 and first["text"] == "Bạn đồng ý chứ?"
    assert first["reply_markup"]["keyboard"] == [[{"text": "Đồng ý"}, {"text": "Không"}]]
    assert photo["photo"].data == (tmp_path / "mau.png").read_bytes()  # uploaded from disk
    assert photo["caption"] == "Ảnh mẫu"
    assert by_url["photo"] == "https://example.vn/a.png"  # a URL passes through
    assert telegram.sent("answerCallbackQuery") == [{"callback_query_id": "cbq-7"}]


async def test_refusals_become_delivery_errors(
    kind: str, telegram: FakeTelegramApi, tmp_path: Path
) -> None:
    transport = _transport(kind, telegram.url, tmp_path)
    adapter = TelegramAdapter("tan-phu", transport=transport)
    try:
        telegram.fail_next(429, retry_after=7)
        with pytest.raises(RetryLater) as slow:
            await adapter.send(KEY, Outbound("x"))
        assert slow.value.retry_after == 7
        telegram.fail_next(403)
        with pytest.raises(RecipientUnreachable):
            await adapter.send(KEY, Outbound("x"))
        telegram.fail_next(500)
        with pytest.raises(RetryLater):
            await adapter.send(KEY, Outbound("x"))
    finally:
        await transport.close()
    wrong = _transport(kind, telegram.url, tmp_path, token="999:wrong-token")
    try:
        with pytest.raises(ConfigurationError):
            await TelegramAdapter("tan-phu", transport=wrong).send(KEY, Outbound("x"))
    finally:
        await wrong.close()
    assert telegram.sent() == []


async def test_an_unreachable_api_is_retried_later(kind: str, tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    transport = _transport(kind, f"http://127.0.0.1:{port}", tmp_path)
    try:
        with pytest.raises(RetryLater) as caught:
            await TelegramAdapter("tan-phu", transport=transport).send(KEY, Outbound("x"))
        assert TG_TOKEN not in str(caught.value)
    finally:
        await transport.close()


async def test_long_poll_waits_and_returns_updates(
    kind: str, telegram: FakeTelegramApi, tmp_path: Path
) -> None:
    transport = _transport(kind, telegram.url, tmp_path)
    try:
        empty = await transport.call("getUpdates", {"timeout": 1})
        assert empty == {"ok": True, "result": []}
        telegram.push_update(
            {
                "update_id": 10,
                "message": {
                    "message_id": 1,
                    "date": 1772627520,
                    "chat": {"id": 7, "type": "private"},
                    "from": {"id": 7, "is_bot": False, "first_name": "Lan"},
                    "text": "Xin chào",
                },
            }
        )
        reply = await transport.call("getUpdates", {"timeout": 5})
        assert [u["update_id"] for u in reply["result"]] == [10]
        assert reply["result"][0]["message"]["from"]["first_name"] == "Lan"
    finally:
        await transport.close()


async def test_aiogram_response_class_survives_garbage_collection(
    telegram: FakeTelegramApi, tmp_path: Path
) -> None:
    """Regression: aiogram built `Response[Message]` (a pydantic class and its schema) again
    after every garbage collection, a tenth of a reply's CPU under load."""
    import gc
    import weakref

    from aiogram.methods.base import Response
    from aiogram.types import Message

    transport = _transport("aiogram", telegram.url, tmp_path)
    adapter = TelegramAdapter("tan-phu", transport=transport)
    try:
        await adapter.send(KEY, Outbound("Một"))
        built = weakref.ref(Response[Message])
        gc.collect()
        assert built() is not None  # still the cached class: the next call builds nothing
        await adapter.send(KEY, Outbound("Hai"))
    finally:
        await transport.close()
    assert [c["text"] for c in telegram.sent("sendMessage")] == ["Một", "Hai"]


async def test_replies_skip_aiogram_models_but_use_its_session(
    telegram: FakeTelegramApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reply path posts the rendered JSON through aiogram's session: no aiogram method
    object is built for it (they were a third of a reply's CPU), uploads still are."""
    from aiogram import methods

    built: list[str] = []
    real_init = methods.SendMessage.__init__

    def spy(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append("SendMessage")
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(methods.SendMessage, "__init__", spy)
    transport = _transport("aiogram", telegram.url, tmp_path)
    adapter = TelegramAdapter("tan-phu", transport=transport)
    try:
        await adapter.send(KEY, Outbound("Chào bạn", (Choice("Đồng ý", "y"),)))
        await adapter.send(KEY, Outbound("Ảnh mẫu", image="/media/mau.png"))  # an upload
        session = await transport._bot.session.create_session()
        assert transport._plain is not None and transport._plain._session is session
    finally:
        await transport.close()
    assert built == []
    sent = telegram.sent()
    assert sent[0]["text"] == "Chào bạn"
    assert "Đồng ý" in str(sent[0]["reply_markup"])
    assert len(telegram.sent("sendPhoto")) == 1
