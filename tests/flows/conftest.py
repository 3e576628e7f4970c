"""Helpers for driving the engine through whole conversations."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.compiler import CompiledBundle, CompiledFlow, compile_bundle
from flows.engine import Engine, Turn
from flows.events import RecordEvent
from flows.schema import Bundle
from flows.session import Session, dumps, loads
from flows.vocab import Attachment, Channel, Inbound, InboundKind, Outbound

# A deployment shaped like the "Công dân số" campaign in DESIGN.md.
DEPLOYMENT = """
menu: menu
organisations:
  tp-hcm:
    name: Thành Đoàn TP. Hồ Chí Minh
    children:
      tan-phu:
        name: Quận Đoàn Tân Phú
        channels:
          telegram: {token: $TANPHU_TELEGRAM_TOKEN, mode: polling}
        links:
          huyhieuso: cong_dan_so
          cb001: {flow: cong_dan_so, ref: CB001}
        children:
          hoa-thanh: {name: Đoàn phường Hòa Thạnh}
          phu-thanh: {name: Đoàn phường Phú Thạnh}
          tan-thanh: {name: Đoàn phường Tân Thành}
          thpt-tan-phu: {name: Trường THPT Tân Phú}
          tan-phu-ward: {name: Đoàn phường Tân Phú}

campaigns:
  cong_dan_so:
    title: Thử thách “Công dân số” năm 2023
    waves:
      - {name: Đợt 1, from: 2023-08-07, to: 2023-09-14}
      - {name: Đợt 2, from: 2023-09-15, to: 2023-10-15}

flows:
  menu:
    title: Màn hình chính
    steps:
      - choose: Chào bạn! Bạn muốn làm gì?
        choices:
          - {title: Đăng ký thông tin, goto: dang_ky}
          - {title: Thử thách Công dân số, goto: cong_dan_so, synonyms: [cong dan so]}
          - {title: Gặp cán bộ, goto: ho_tro}

  dang_ky:
    title: Đăng ký thông tin
    steps:
      - ask: >-
          Ban Tổ chức cần lưu họ tên, đơn vị, email và số điện thoại của bạn để xét huy hiệu.
          Bạn đồng ý chứ?
        expect: yes_no
        save: dong_y
        when_no: {say: 'Không sao, khi nào sẵn sàng bạn gõ "menu" nhé.', goto: menu}
      - ask: Họ và tên của bạn là?
        expect: {text: {min: 4}}
        save: ho_ten
      - ask: "Đơn vị học tập và công tác của bạn? (VD: Đoàn phường Hòa Thạnh)"
        expect: unit
        save: don_vi
      - ask: Địa chỉ mail của bạn là gì?
        expect: email
        retry: "Email chưa đúng, bạn nhập lại giúp mình nhé (VD: ten@gmail.com)."
        save: email
      - ask: Số điện thoại của bạn?
        expect: phone
        save: so_dien_thoai
      - say: Cảm ơn {ho_ten} ({so_dien_thoai}, {don_vi}), bạn đã đăng ký thành công!
        choices:
          - {title: Thực hiện thôi nào, goto: cong_dan_so}

  cong_dan_so:
    title: Thử thách Công dân số
    campaign: cong_dan_so
    requires: dang_ky
    steps:
      - evidence: vneid
        ask: Đăng nhập VNeID > Thông tin cá nhân, chụp màn hình như ảnh mẫu rồi gửi cho mình nhé.
        image: media/mau-vneid.png
        expect: image
      - evidence: dich_vu_cong
        ask: Bạn đã sử dụng dịch vụ công trực tuyến nào? Thuộc lĩnh vực gì?
        expect: {text: {min: 10}}
      - action: submit
        say: Cảm ơn {ho_ten}! Ban Tổ chức sẽ xét duyệt minh chứng và gửi huy hiệu cho bạn.

  ho_tro:
    title: Hỗ trợ
    steps:
      - action: handover
        say: Mình đã báo cán bộ, bạn chờ chút nhé.
      - say: Cảm ơn bạn đã trao đổi với cán bộ!
      - end:
"""

IN_WAVE = datetime(2023, 8, 20, 3, 0, tzinfo=UTC)  # Đợt 1
TYPED_PHONE = "0912345678"


def build(
    text: str, units: Mapping[str, Sequence[tuple[str, str]]] | None = None
) -> CompiledBundle:
    bundle = Bundle.model_validate(yaml.safe_load(text))
    return compile_bundle(bundle, Path("."), units)


class Chat:
    """One person talking to the engine; the session round-trips through dumps/loads like it
    does through Redis."""

    _ids = itertools.count(1)

    def __init__(
        self,
        engine: Engine,
        *,
        now: datetime = IN_WAVE,
        district: str = "tan-phu",
        channel: Channel = Channel.TELEGRAM,
    ) -> None:
        self.engine = engine
        self.now = now
        self.district = district
        self.channel = channel
        self.stored: bytes | None = None
        self.turns: list[Turn] = []

    @property
    def session(self) -> Session | None:
        return loads(self.stored) if self.stored is not None else None

    @property
    def last(self) -> Turn:
        return self.turns[-1]

    def send_inbound(self, kind: InboundKind, **fields: Any) -> Turn:
        inbound = Inbound(
            district=self.district,
            channel=self.channel,
            user_id="u1",
            kind=kind,
            message_id=f"m{next(self._ids)}",
            timestamp=self.now,
            **fields,
        )
        turn = self.engine.handle(self.session, inbound, self.now)
        assert turn.error is None, repr(turn.error)
        self.stored = dumps(turn.session) if turn.session is not None else None
        self.turns.append(turn)
        return turn

    def start(self, ref: str | None = None) -> Turn:
        return self.send_inbound(InboundKind.START, ref=ref)

    def say(self, text: str) -> Turn:
        return self.send_inbound(InboundKind.TEXT, text=text)

    def press(self, title: str) -> Turn:
        """Press the button titled `title` on the last message that had it (inline button)."""
        for turn in reversed(self.turns):
            for out in reversed(turn.outbound):
                for choice in out.choices:
                    if choice.title == title:
                        return self.send_inbound(
                            InboundKind.CHOICE, payload=choice.payload, text=title
                        )
        raise AssertionError(f"no button {title!r} was shown")

    def image(self, mime: str = "image/jpeg", sha: str = "abc123") -> Turn:
        return self.send_inbound(
            InboundKind.IMAGE, attachments=(Attachment(mime=mime, file_id="f1", sha256=sha),)
        )

    def file(self, mime: str) -> Turn:
        return self.send_inbound(
            InboundKind.FILE, attachments=(Attachment(mime=mime, file_id="d1", sha256="d" * 8),)
        )

    def sticker(self) -> Turn:
        return self.send_inbound(InboundKind.STICKER)

    def system(self, name: str, **data: str) -> Turn:
        return self.send_inbound(InboundKind.SYSTEM, payload=name, data=tuple(data.items()))

    @property
    def texts(self) -> list[str]:
        return [o.text for o in self.last.outbound]

    @property
    def text(self) -> str:
        return "\n---\n".join(self.texts)

    @property
    def events(self) -> tuple[RecordEvent, ...]:
        return self.last.events

    @property
    def buttons(self) -> list[str]:
        return [c.title for o in self.last.outbound for c in o.choices]

    def outbound(self, index: int = -1) -> Outbound:
        return self.last.outbound[index]


@pytest.fixture
def bundle() -> CompiledBundle:
    return build(DEPLOYMENT)


@pytest.fixture
def engine(bundle: CompiledBundle) -> Engine:
    return Engine(bundle)


@pytest.fixture
def chat(engine: Engine) -> Chat:
    return Chat(engine)


def register(chat: Chat) -> None:
    """Walk through dang_ky with valid answers (entering from the menu)."""
    chat.start()
    chat.press("Đăng ký thông tin")
    chat.say("có")
    chat.say("Nguyễn Văn An")
    chat.say("phuong hoa thanh")
    chat.say("an.nguyen@gmail.com")
    chat.say(TYPED_PHONE)


def archive(*bundles: CompiledBundle) -> dict[tuple[str, str], CompiledFlow]:
    return {(f.id, f.version): f for b in bundles for f in b.flows.values()}
