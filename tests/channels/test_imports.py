"""A deployment imports an adapter module only when one of its districts uses that channel; one
without Telegram never loads aiogram (seconds and ~150 MB). Checked in fresh interpreters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .conftest import MESSENGER_SECRET, TG_SECRET, TG_TOKEN, VERIFY_TOKEN

REPO = Path(__file__).resolve().parents[2]

PROBE = r"""
import asyncio, json, sys
from bots.settings import from_env
from bots.runtime import Runtime
from bots.server import build_app

env = json.loads(sys.argv[1])
runtime = Runtime(from_env(env), env=env, sweep_every=0)

async def main():
    app = build_app(runtime)  # every route registered, webhooks included
    await runtime.start()
    adapters = sorted(c.value for c in (runtime.channels.adapters() if runtime.channels else {}))
    await runtime.stop()
    return adapters

adapters = asyncio.run(main())
loaded = lambda name: any(m == name or m.startswith(name + ".") for m in sys.modules)
print(json.dumps({
    "adapters": adapters,
    "aiogram": loaded("aiogram"),
    "messenger": loaded("adapters.messenger"),
    "zalo": loaded("adapters.zalo"),
    "telegram_transport": loaded("adapters.telegram_transport"),
}))
"""

FLOWS = """\
organisations:
  tan-phu:
    name: Quận Đoàn Tân Phú
    channels:
{channels}
flows:
  menu:
    title: Menu
    steps:
      - say: Xin chào!
"""


def _probe(tmp_path: Path, channels: str, extra: dict[str, str]) -> dict[str, object]:
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "flows.yaml").write_text(FLOWS.format(channels=channels), encoding="utf-8")
    env = {
        "LOA_CONFIG": str(folder / "flows.yaml"),
        "LOA_DATA_DIR": str(tmp_path / "var"),
        "LOA_GRAPH_API": "http://127.0.0.1:9",
        "LOA_TELEGRAM_API": "http://127.0.0.1:9",
        "LOA_CHANNEL_HEALTH_EVERY": "0",
        **extra,
    }
    process = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(env)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    result: dict[str, object] = json.loads(process.stdout.strip().splitlines()[-1])
    return result


def test_a_deployment_without_telegram_never_imports_aiogram(tmp_path: Path) -> None:
    result = _probe(
        tmp_path,
        '      messenger: {page_id: "1", page_token: $PAGE_TOKEN}\n      webchat: {}',
        {
            "PAGE_TOKEN": "page-token",
            "LOA_MESSENGER_APP_SECRET": MESSENGER_SECRET,
            "LOA_MESSENGER_VERIFY_TOKEN": VERIFY_TOKEN,
        },
    )
    assert result["adapters"] == ["messenger"]
    assert result["messenger"] is True
    assert result["aiogram"] is False
    assert result["telegram_transport"] is False
    assert result["zalo"] is False


def test_a_deployment_with_telegram_sends_through_aiogram(tmp_path: Path) -> None:
    result = _probe(
        tmp_path,
        "      telegram: {token: $TG_TOKEN, secret_token: $TG_SECRET}",
        {"TG_TOKEN": TG_TOKEN, "TG_SECRET": TG_SECRET},
    )
    assert result["adapters"] == ["telegram"]
    assert result["aiogram"] is True
    assert result["messenger"] is False
