"""Reading the districts' `channels:`: secrets come from the environment by name; every problem
is reported at start-up in Vietnamese, naming variables and never their values."""

from __future__ import annotations

from pathlib import Path

import pytest

from bots.channels import ChannelConfigError, read_config
from bots.runtime import FlowsInvalid, Runtime
from bots.settings import from_env

from .conftest import HERE, png

SECRET_VALUE = "very-secret-value-123"


def _settings(**env: str):  # type: ignore[no-untyped-def]
    return from_env({"LOA_DATA_DIR": "/tmp/loa-config-test", **env}, create_dirs=False)


def test_secrets_are_read_from_the_environment_and_kept_out_of_repr() -> None:
    settings = _settings(
        LOA_MESSENGER_APP_SECRET=SECRET_VALUE, LOA_MESSENGER_VERIFY_TOKEN=SECRET_VALUE
    )
    config = read_config(
        [
            ("tan-phu", {
                "messenger": {"page_id": "1", "page_token": "$PAGE"},
                "telegram": {"token": "${TG}", "mode": "polling", "keyboard": "inline"},
            }),
        ],
        settings,
        {"PAGE": SECRET_VALUE, "TG": "42:" + SECRET_VALUE},
    )
    assert config.messenger[0].token == SECRET_VALUE
    assert config.telegram[0].token == "42:" + SECRET_VALUE
    assert config.telegram[0].keyboard == "inline"
    assert config.telegram_token("tan-phu") == "42:" + SECRET_VALUE
    assert SECRET_VALUE not in repr(config)
    assert SECRET_VALUE not in repr(settings)


def test_every_problem_is_reported_without_secret_values() -> None:
    settings = _settings()  # no Meta or Zalo app credentials at all
    districts = [
        ("tan-phu", {
            "messenger": {"page_id": "1", "page_token": "$TANPHU_PAGE_TOKEN"},
            "telegram": {"token": "$TG"},  # webhook mode needs a secret token
            "zalobot": {"token": SECRET_VALUE, "secret_token": "$ZB_SECRET"},
            "zalo": {"oa_id": "22"},
        }),
        ("ben-tre", {"messenger": {"page_id": "1", "page_token": "$BENTRE_PAGE_TOKEN"}}),
    ]
    env = {"TG": "42:abc", "ZB_SECRET": SECRET_VALUE, "BENTRE_PAGE_TOKEN": SECRET_VALUE}
    with pytest.raises(ChannelConfigError) as caught:
        read_config(districts, settings, env)
    problems = caught.value.problems
    text = "\n".join(problems)
    assert SECRET_VALUE not in text
    assert "biến môi trường TANPHU_PAGE_TOKEN ('page_token') chưa được đặt" in text
    assert "đơn vị tan-phu, kênh telegram: thiếu 'secret_token'" in text
    assert "'token' phải là tên biến môi trường" in text  # a secret written in the file
    assert "Trang Messenger 1 được khai báo cho hai đơn vị" not in text  # tan-phu's is unset
    assert "LOA_MESSENGER_APP_SECRET" in text and "LOA_MESSENGER_VERIFY_TOKEN" in text
    assert "LOA_ZALO_APP_ID" in text and "LOA_ZALO_OA_SECRET_KEY" in text


def test_one_page_for_two_districts_is_refused() -> None:
    settings = _settings(LOA_MESSENGER_APP_SECRET="s", LOA_MESSENGER_VERIFY_TOKEN="v")
    districts = [
        ("tan-phu", {"messenger": {"page_id": "1", "page_token": "$A"}}),
        ("ben-tre", {"messenger": {"page_id": "1", "page_token": "$B"}}),
    ]
    with pytest.raises(ChannelConfigError) as caught:
        read_config(districts, settings, {"A": "a", "B": "b"})
    assert caught.value.problems == (
        "Trang Messenger 1 được khai báo cho hai đơn vị (tan-phu, ben-tre); "
        "mỗi kênh chỉ thuộc một đơn vị",
    )


def test_the_server_does_not_start_with_an_unset_variable(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    (folder / "media").mkdir(parents=True)
    (folder / "flows.yaml").write_text((HERE / "flows.yaml").read_text("utf-8"), "utf-8")
    (folder / "media" / "mau-vneid.png").write_bytes(png("mau"))
    env = {"LOA_CONFIG": str(folder / "flows.yaml"), "LOA_DATA_DIR": str(tmp_path / "var")}
    runtime = Runtime(from_env(env), env=env)
    with pytest.raises(FlowsInvalid) as caught:
        runtime.load()
    lines = caught.value.problems
    assert all(line.startswith(str(folder / "flows.yaml")) for line in lines)
    assert any("TANPHU_TELEGRAM_TOKEN" in line for line in lines)
    # `loa chat` (no channels served) loads the same file without them
    chat = Runtime(from_env(env), env=env, recover=False)
    assert chat.load().channels  # the channels are in the file ...
    assert chat.channel_config is None  # ... but not set up
