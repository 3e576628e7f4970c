"""What the chat page does (bots/web/chat.js), for the operations tests."""

from __future__ import annotations

import io
import secrets
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient
from PIL import Image, ImageDraw

from bots.server import RUNTIME


def metric(body: str, name: str, **labels: str) -> float | None:
    """A sample's value in a Prometheus text exposition (None when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def png(color: str, label: str = "") -> bytes:
    image = Image.new("RGB", (240, 480), color)
    ImageDraw.Draw(image).text((20, 200), label or color, fill="white")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


class Browser:
    def __init__(self, client: TestClient[Any, Any], district: str = "tan-phu") -> None:
        self.client = client
        self.user = secrets.token_urlsafe(18)
        self.district = district
        self.cursor = 0

    async def send(self, **fields: Any) -> tuple[int, dict[str, Any]]:
        body = {"user": self.user, "district": self.district, **fields}
        body.setdefault("id", "m" + secrets.token_urlsafe(12))
        response = await self.client.post("/chat/send", json=body)
        return response.status, await response.json()

    async def upload(self, data: bytes) -> tuple[int, dict[str, Any]]:
        form = aiohttp.FormData()
        form.add_field("user", self.user)
        form.add_field("district", self.district)
        form.add_field("id", "m" + secrets.token_urlsafe(12))
        form.add_field("file", data, filename="anh.png", content_type="image/png")
        response = await self.client.post("/chat/upload", data=form)
        return response.status, await response.json()

    async def replies(self) -> list[str]:
        await self.client.app[RUNTIME].pipeline.idle()
        response = await self.client.get(
            "/chat/messages",
            params={"user": self.user, "district": self.district, "after": self.cursor,
                    "wait": "0"},
        )
        data = await response.json()
        self.cursor = data["cursor"]
        return [m["text"] for m in data["messages"]]

    async def say(self, text: str) -> str:
        status, body = await self.send(text=text)
        assert status == 202, body
        return "\n".join(await self.replies())
