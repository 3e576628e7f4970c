"""`loa qr`: the deep link of each channel, encoded in a QR code that decodes back to it."""

from __future__ import annotations

import asyncio
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import segno
import zxingcpp
from PIL import Image

from bots.cli import main
from bots.links import LinkError, build, choose_ref
from flows.vocab import Channel
from tests.fakes.telegram_api import FakeTelegramApi

FLOWS = """\
organisations:
  tan-phu:
    name: Quận Đoàn Tân Phú
    channels:
      webchat: {}
      messenger: {page_id: "1029384756", page_token: $TP_PAGE_TOKEN}
      telegram: {token: $TP_TELEGRAM_TOKEN, secret_token: $TP_TELEGRAM_SECRET}
      zalo: {oa_id: "2222222222222222222"}
      zalobot:
        token: $TP_ZALOBOT_TOKEN
        secret_token: $TP_ZALOBOT_SECRET
        link: https://zalo.me/s/bot-tan-phu
    menu: menu
    links:
      huyhieuso: cong_dan_so
      vneid-can-bo-an: {flow: huong_dan, ref: can-bo-an}
  ben-tre:
    name: Tỉnh Đoàn Bến Tre
    channels:
      telegram: {token: $BT_TELEGRAM_TOKEN, mode: polling, username: LoaBenTreBot}
flows:
  menu:
    title: Menu
    steps:
      - say: Chào bạn!
        choices:
          - {title: Công dân số, goto: cong_dan_so}
          - {title: Hướng dẫn, goto: huong_dan}
  cong_dan_so:
    title: Công dân số
    steps:
      - say: Thử thách Công dân số.
  huong_dan:
    title: Hướng dẫn VNeID
    steps:
      - say: Cài ứng dụng VNeID.
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "flows.yaml"
    path.write_text(FLOWS, encoding="utf-8")
    for name in list(os.environ):
        if name.startswith("LOA_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LOA_DATA_DIR", str(tmp_path / "var"))
    return path


def decoded(path: Path) -> list[str]:
    return [result.text for result in zxingcpp.read_barcodes(Image.open(path))]


def qr(config: Path, *args: str) -> int:
    return main(["qr", "--config", str(config), "--district", "tan-phu", *args])


@pytest.mark.parametrize(
    ("channel", "flow", "extra", "link"),
    [
        ("messenger", "cong_dan_so", [], "https://m.me/1029384756?ref=huyhieuso"),
        ("zalo", "cong_dan_so", [], "https://zalo.me/2222222222222222222"),
        ("zalobot", "huong_dan", [], "https://zalo.me/s/bot-tan-phu"),
        ("telegram", "huong_dan", ["--ref", "can-bo-an", "--bot", "LoaTanPhuBot"],
         "https://t.me/LoaTanPhuBot?start=vneid-can-bo-an"),
        ("webchat", "huong_dan", [], "https://loa.example.vn/?d=tan-phu&ref=huong_dan"),
    ],
)
def test_the_png_decodes_to_the_printed_link(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, channel: str, flow: str, extra: list[str], link: str,
) -> None:
    monkeypatch.setenv("LOA_PUBLIC_URL", "https://loa.example.vn")
    out = tmp_path / f"{channel}.png"
    assert qr(config, "--channel", channel, "--flow", flow, "--out", str(out), *extra) == 0
    assert decoded(out) == [link]
    printed = capsys.readouterr().out
    assert f"Đường dẫn: {link}" in printed
    if channel.startswith("zalo"):
        assert "người dùng gửi: #" in printed  # the OA and the bot have no deep-link ref
    if "--ref" in extra:
        assert "ghi công cho mã cán bộ can-bo-an" in printed


def test_svg_holds_the_same_code(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "poster.svg"
    assert qr(config, "--channel", "messenger", "--flow", "cong_dan_so", "--out", str(out)) == 0
    root = ET.fromstring(out.read_bytes())
    assert root.tag.endswith("svg")
    expected = tmp_path / "expected.svg"
    segno.make("https://m.me/1029384756?ref=huyhieuso", error="m", micro=False).save(
        str(expected), scale=8, border=4
    )
    assert out.read_bytes() == expected.read_bytes()


async def test_the_telegram_username_is_asked_of_the_bot_api(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with FakeTelegramApi() as tg:
        monkeypatch.setenv("LOA_TELEGRAM_API", tg.url)
        monkeypatch.setenv("TP_TELEGRAM_TOKEN", tg.token)
        out = tmp_path / "tg.png"
        args = ["--channel", "telegram", "--flow", "cong_dan_so", "--out", str(out)]
        assert await asyncio.to_thread(qr, config, *args) == 0
        assert [method for method, _ in tg.calls] == ["getMe"]
    assert decoded(out) == ["https://t.me/LoaFakeBot?start=huyhieuso"]
    assert tg.token not in capsys.readouterr().out


def test_a_username_in_flows_yaml_needs_no_network(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "bt.png"
    args = ["qr", "--config", str(config), "--district", "ben-tre", "--channel", "telegram",
            "--flow", "huong_dan", "--out", str(out)]
    assert main(args) == 0
    assert decoded(out) == ["https://t.me/LoaBenTreBot?start=huong_dan"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--channel", "messenger", "--flow", "cong_dan_sox"], "Có phải: cong_dan_so"),
        (["--channel", "messenger", "--flow", "huong_dan", "--ref", "cán-bộ"], "không hợp lệ"),
        (["--channel", "messenger", "--flow", "huong_dan", "--ref", "can-bo-binh"],
         "ref: can-bo-binh"),
        (["--channel", "telegram", "--flow", "menu"], "Chưa biết tên bot Telegram"),
        (["--channel", "messenger", "--flow", "menu", "--out", "x.gif"], ".png hoặc .svg"),
        (["--channel", "webchat", "--flow", "menu"], "LOA_PUBLIC_URL"),
    ],
)
def test_clear_errors(
    config: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # a successful run writes its default qr-….png into the cwd
    code = qr(config, *args)
    printed = capsys.readouterr()
    if message == "LOA_PUBLIC_URL":  # no public URL: a local link, and a warning saying so
        assert code == 0 and message in printed.err
        assert (tmp_path / "qr-tan-phu-webchat-menu.png").is_file()
        return
    assert code == 1
    assert printed.err.startswith("Lỗi: ") and message in printed.err
    assert printed.out == ""


def test_an_unconfigured_channel_or_district_is_named(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["qr", "--config", str(config), "--district", "ben-tre", "--channel", "zalo",
            "--flow", "menu"]
    assert main(args) == 1
    assert "chưa khai báo kênh zalo" in capsys.readouterr().err
    args[4] = "quan-9"
    assert main(args) == 1
    assert "tan-phu, ben-tre" in capsys.readouterr().err


def test_link_rules() -> None:
    class Link:
        def __init__(self, flow: str, code: str | None = None) -> None:
            self.flow, self.code = flow, code

    links = {"a": Link("f"), "b-an": Link("g", "an"), "c": Link("g")}
    flows = {"f": 1, "g": 2, "h": 3}
    assert choose_ref(links, flows, "d", "f", None) == ("a", None)
    assert choose_ref(links, flows, "d", "g", None) == ("c", None)  # the plain link, not a cadre's
    assert choose_ref(links, flows, "d", "g", "an") == ("b-an", "an")
    assert choose_ref(links, flows, "d", "h", None) == ("h", None)  # a flow id opens itself
    with pytest.raises(LinkError):
        build(Channel.WEBCHAT, "d", "f", "x" * 65, {}, public_url="https://x")
    with pytest.raises(LinkError):
        build(Channel.CONSOLE, "d", "f", "a", {})
