"""Settings come from the environment once, with the command line on top."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bots.settings import DEFAULT_TELEGRAM_API, SettingsError, from_env, load


def test_defaults_on_a_fresh_clone(tmp_path: Path) -> None:
    settings = from_env({"LOA_DATA_DIR": str(tmp_path / "var")})
    assert settings.data_dir == (tmp_path / "var").resolve() and settings.data_dir.is_dir()
    assert settings.config == Path("flows.yaml")
    assert settings.redis_url is None
    assert settings.database_url == f"sqlite+aiosqlite:///{settings.data_dir / 'loa.sqlite3'}"
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.base_url == "http://127.0.0.1:8080"
    assert settings.telegram_api == DEFAULT_TELEGRAM_API


def test_environment_and_command_line(tmp_path: Path) -> None:
    env = {
        "LOA_DATA_DIR": str(tmp_path),
        "LOA_REDIS_URL": "redis://127.0.0.1:6379/3",
        "LOA_PORT": "9000",
        "LOA_PUBLIC_URL": "https://loa.example.vn/",
        "LOA_TELEGRAM_API": "http://127.0.0.1:5000/",
        "LOA_SESSION_TTL": "60",
        "LOA_LOCK_TTL": "2.5",
    }
    settings = from_env(env)
    assert settings.redis_url == "redis://127.0.0.1:6379/3"
    assert settings.base_url == "https://loa.example.vn"
    assert settings.telegram_api == "http://127.0.0.1:5000"
    assert (settings.session_ttl, settings.lock_ttl) == (60, 2.5)
    args = argparse.Namespace(config="other.yaml", host="0.0.0.0", port=7000)
    overridden = load(args, env)
    assert (overridden.config, overridden.host, overridden.port) == (Path("other.yaml"),
                                                                      "0.0.0.0", 7000)
    assert load(argparse.Namespace(config=None, host=None, port=None), env).port == 9000


@pytest.mark.parametrize("name, value", [("LOA_PORT", "http"), ("LOA_LOCK_TTL", "-1")])
def test_bad_values_are_refused_in_vietnamese(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(SettingsError, match="cần"):
        from_env({"LOA_DATA_DIR": str(tmp_path), name: value})


def test_serve_runs_on_uvloop_unless_turned_off(tmp_path: Path) -> None:
    import uvloop

    from bots.serve import event_loop_factory

    on = from_env({"LOA_DATA_DIR": str(tmp_path)})
    factory = event_loop_factory(on)
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
    off = from_env({"LOA_DATA_DIR": str(tmp_path), "LOA_UVLOOP": "0"})
    assert event_loop_factory(off) is None


def test_processes_setting_and_index(tmp_path: Path) -> None:
    settings = from_env({"LOA_DATA_DIR": str(tmp_path), "LOA_PROCESSES": "3"})
    assert (settings.processes, settings.process_index, settings.runs_singletons) == (3, None, True)
    child = from_env(
        {"LOA_DATA_DIR": str(tmp_path), "LOA_PROCESSES": "3", "LOA_PROCESS_INDEX": "2"}
    )
    assert (child.process_index, child.runs_singletons) == (2, False)
    with pytest.raises(SettingsError, match="LOA_PROCESS_INDEX"):
        from_env({"LOA_DATA_DIR": str(tmp_path), "LOA_PROCESS_INDEX": "một"})
