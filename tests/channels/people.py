"""People chatting with the bot through the fake platforms: each builds the webhook bodies its
platform would send (signed, with fresh timestamps), posts them to the real server and reads the
bot's replies from what the fake platform received."""

from __future__ import annotations

import itertools
import json
import re
import time
from typing import Any

from .conftest import TANPHU_OA, TANPHU_PAGE, ZALO_APP_ID, Server, png, wait_until

_ids = itertools.count(1)


def _ms() -> int:
    return int(time.time() * 1000)


class Person:
    """Common to every platform: post, then wait until the bot has answered and settled."""

    server: Server

    def sent_count(self) -> int:
        raise NotImplementedError

    def messages(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def texts(self) -> list[str]:
        raise NotImplementedError

    async def _post(self, body: bytes) -> None:
        raise NotImplementedError

    async def turn(self, body: bytes, *, expect_reply: bool = True) -> list[str]:
        before = len(self.texts())
        await self._post(body)
        await self.server.settle()
        if expect_reply:
            await wait_until(lambda: len(self.texts()) > before)
            await self.server.settle()
        return self.texts()[before:]


class MessengerUser(Person):
    def __init__(self, server: Server, psid: str, page: str = TANPHU_PAGE) -> None:
        self.server, self.psid, self.page = server, psid, page

    def body(self, **event: Any) -> bytes:
        ms = _ms()
        messaging = {"sender": {"id": self.psid}, "recipient": {"id": self.page}, "timestamp": ms}
        messaging.update(event)
        entry = {"id": self.page, "time": ms, "messaging": [messaging]}
        return json.dumps({"object": "page", "entry": [entry]}, ensure_ascii=True).encode()

    async def _post(self, body: bytes) -> None:
        response = await self.server.post_messenger(body)
        assert response.status == 200, await response.text()

    def messages(self) -> list[dict[str, Any]]:
        return [m for r, m in self.server.platforms.graph.delivered if r == self.psid]

    def texts(self) -> list[str]:
        out = []
        for message in self.messages():
            if "text" in message:
                out.append(message["text"])
            else:
                payload = message["attachment"].get("payload") or {}
                out.append(payload.get("text") or payload.get("url") or "")
        return out

    def buttons(self) -> list[str]:
        """The titles the last message offers (template buttons or quick replies)."""
        last = self.messages()[-1]
        if "quick_replies" in last:
            return [q["title"] for q in last["quick_replies"]]
        payload = last.get("attachment", {}).get("payload") or {}
        return [b["title"] for b in payload.get("buttons") or []]

    async def start(self, ref: str | None = None) -> list[str]:
        postback: dict[str, Any] = {"title": "Bắt đầu", "payload": "GET_STARTED", "mid": self.mid()}
        if ref is not None:
            postback["referral"] = {"ref": ref, "source": "SHORTLINK", "type": "OPEN_THREAD"}
        return await self.turn(self.body(postback=postback))

    def mid(self) -> str:
        return f"m_test_{next(_ids)}"

    async def say(self, text: str, **kw: Any) -> list[str]:
        return await self.turn(self.body(message={"mid": self.mid(), "text": text}), **kw)

    async def tap(self, title: str) -> list[str]:
        last = self.messages()[-1]
        for reply in last.get("quick_replies") or []:
            if reply["title"] == title:
                quick = {"payload": reply["payload"]}
                message = {"mid": self.mid(), "text": title, "quick_reply": quick}
                return await self.turn(self.body(message=message))
        payload = last.get("attachment", {}).get("payload") or {}
        for button in payload.get("buttons") or []:
            if button["title"] == title:
                postback = {"title": title, "payload": button["payload"], "mid": self.mid()}
                return await self.turn(self.body(postback=postback))
        raise AssertionError(f"no button {title!r} on {last!r}")

    async def images(self, names: list[str], **kw: Any) -> list[str]:
        cdn = self.server.platforms.cdn.url
        attachments = [{"type": "image", "payload": {"url": f"{cdn}/{n}.png"}} for n in names]
        message = {"mid": self.mid(), "attachments": attachments}
        return await self.turn(self.body(message=message), **kw)


class ZaloUser(Person):
    def __init__(self, server: Server, user_id: str, oa: str = TANPHU_OA) -> None:
        self.server, self.user_id, self.oa = server, user_id, oa

    def body(self, event: str, message: dict[str, Any]) -> bytes:
        data = {
            "app_id": ZALO_APP_ID,
            "sender": {"id": self.user_id},
            "user_id_by_app": f"app-{self.user_id}",
            "recipient": {"id": self.oa},
            "event_name": event,
            "message": message,
            "timestamp": str(_ms()),
        }
        return json.dumps(data, ensure_ascii=False).encode()

    async def _post(self, body: bytes) -> None:
        response = await self.server.post_zalo(body)
        assert response.status == 200, await response.text()

    def messages(self) -> list[dict[str, Any]]:
        return [
            (r.body or {})["message"]
            for r in self.server.platforms.zalo.sends
            if (r.body or {}).get("recipient", {}).get("user_id") == self.user_id
        ]

    def texts(self) -> list[str]:
        out = []
        for message in self.messages():
            if "text" in message:
                out.append(message["text"])
            else:
                elements = message["attachment"]["payload"].get("elements") or [{}]
                out.append(elements[0].get("url", ""))
        return out

    def buttons(self) -> list[str]:
        last = self.messages()[-1]
        payload = (last.get("attachment") or {}).get("payload") or {}
        return [b["title"] for b in payload.get("buttons") or []]

    def msg_id(self) -> str:
        return f"zalo-test-{next(_ids):08d}"

    async def say(self, text: str, **kw: Any) -> list[str]:
        message = {"text": text, "msg_id": self.msg_id()}
        return await self.turn(self.body("user_send_text", message), **kw)

    async def tap(self, title: str) -> list[str]:
        last = self.messages()[-1]
        buttons = ((last.get("attachment") or {}).get("payload") or {}).get("buttons") or []
        for button in buttons:
            if button["title"] == title:
                return await self.say(button["payload"])  # oa.query.show: the payload is "said"
        raise AssertionError(f"no button {title!r} on {last!r}")

    async def image(self, name: str, **kw: Any) -> list[str]:
        url = f"{self.server.platforms.cdn.url}/{name}.png"
        message = {
            "msg_id": self.msg_id(),
            "attachments": [{"type": "image", "payload": {"url": url, "thumbnail": url}}],
        }
        return await self.turn(self.body("user_send_image", message), **kw)


_NUMBERED = re.compile(r"^(\d+)\. (.+)$", re.MULTILINE)


class ZaloBotUser(Person):
    """A person chatting with a district's Zalo Bot (the Telegram-like Zalo Bot API). Webhook
    bodies are the unwrapped `{"event_name", "message"}` shape implementations observe (with
    `wrapped=True`, the documented `{"ok": true, "result": ...}` envelope); `date` is in ms."""

    def __init__(self, server: Server, chat_id: str, district: str = "tan-phu") -> None:
        self.server, self.chat_id, self.district = server, chat_id, district

    def body(self, event: str, *, wrapped: bool = False, **content: Any) -> bytes:
        message = {
            "from": {"id": self.chat_id, "display_name": "Lan Nguyễn", "is_bot": False},
            "chat": {"id": self.chat_id, "chat_type": "PRIVATE"},
            "message_id": f"{next(_ids):020x}",
            "date": _ms(),
            **content,
        }
        update: dict[str, Any] = {"event_name": event, "message": message}
        if wrapped:
            update = {"ok": True, "result": update}
        return json.dumps(update, ensure_ascii=False).encode()

    async def _post(self, body: bytes) -> None:
        response = await self.server.post_zalobot(body, self.district)
        assert response.status == 200, await response.text()

    def calls(self) -> list[tuple[str, dict[str, Any]]]:
        """(method, body) of every Bot-API call to this chat the fake accepted, in order."""
        calls = self.server.platforms.zalobot.calls
        return [(m, b) for m, b in calls if b.get("chat_id") == self.chat_id]

    def messages(self) -> list[dict[str, Any]]:
        return [body for _, body in self.calls()]

    def texts(self) -> list[str]:
        return [m.get("text") or m.get("caption") or "" for m in self.messages()]

    def buttons(self) -> list[str]:
        """The Bot API has no buttons: the titles of the numbered list in the last message."""
        return [title for _, title in _NUMBERED.findall(self.texts()[-1])]

    async def say(self, text: str, **kw: Any) -> list[str]:
        wrapped = kw.pop("wrapped", False)
        body = self.body("message.text.received", wrapped=wrapped, text=text)
        return await self.turn(body, **kw)

    async def tap(self, title: str) -> list[str]:
        """Answer a numbered choice the way people do: with its number."""
        for number, offered in _NUMBERED.findall(self.texts()[-1]):
            if offered == title:
                return await self.say(number)
        raise AssertionError(f"no choice {title!r} in {self.texts()[-1]!r}")

    async def image(self, name: str, **kw: Any) -> list[str]:
        # as captured: `photo_url` on Zalo's CDN, `message_type` CHAT_PHOTO (the server's
        # capture is pointed at the local CDN stand-in, same path)
        content = {
            "message_type": "CHAT_PHOTO",
            "photo_url": f"https://f20-zpc.zdn.vn/png/{name}.png",
        }
        return await self.turn(self.body("message.image.received", **content), **kw)


_updates = itertools.count(1000)


class TelegramUser(Person):
    def __init__(self, server: Server, chat_id: int) -> None:
        self.server, self.chat_id = server, chat_id

    def message(self, **content: Any) -> dict[str, Any]:
        user = {"id": self.chat_id, "is_bot": False, "first_name": "Lan", "language_code": "vi"}
        return {
            "message_id": next(_ids),
            "from": user,
            "chat": {"id": self.chat_id, "first_name": "Lan", "type": "private"},
            "date": int(time.time()),
            **content,
        }

    def update(self, **content: Any) -> dict[str, Any]:
        return {"update_id": next(_updates), "message": self.message(**content)}

    async def _post(self, body: bytes) -> None:
        response = await self.server.post_telegram(body)
        assert response.status == 200, await response.text()

    def messages(self) -> list[dict[str, Any]]:
        sent = self.server.platforms.telegram.sent()
        return [b for b in sent if b.get("chat_id") == self.chat_id]

    def texts(self) -> list[str]:
        return [m.get("text") or m.get("caption") or "" for m in self.messages()]

    def buttons(self) -> list[str]:
        markup = self.messages()[-1].get("reply_markup") or {}
        rows = markup.get("keyboard") or markup.get("inline_keyboard") or []
        return [b["text"] for row in rows for b in row]

    async def send(self, update: dict[str, Any], **kw: Any) -> list[str]:
        return await self.turn(json.dumps(update, ensure_ascii=False).encode(), **kw)

    async def say(self, text: str, **kw: Any) -> list[str]:
        return await self.send(self.update(text=text), **kw)

    async def start(self, payload: str | None = None) -> list[str]:
        text = "/start" + (f" {payload}" if payload else "")
        entity = [{"offset": 0, "length": 6, "type": "bot_command"}]
        return await self.send(self.update(text=text, entities=entity))

    async def tap(self, title: str) -> list[str]:
        assert title in self.buttons(), (title, self.buttons())
        return await self.say(title)  # a reply keyboard sends the title as a message

    def photo_update(self, name: str, **extra: Any) -> dict[str, Any]:
        file_id = f"AgAC-test-{name}"
        self.server.platforms.telegram.add_file(file_id, png(name))
        size = {"file_id": file_id, "file_unique_id": f"u-{name}", "width": 120, "height": 90}
        return self.update(photo=[size], **extra)

    async def photo(self, name: str, **kw: Any) -> list[str]:
        return await self.send(self.photo_update(name), **kw)
