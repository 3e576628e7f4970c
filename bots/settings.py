"""Settings: read once at start-up from the environment (and the command line) into a frozen value.

Nothing else in Loa reads `os.environ` for configuration; everything receives a `Settings`.
Secrets referenced by name in flows.yaml (`$TANPHU_PAGE_TOKEN`) are resolved by the channel
code, not here, so they never pass through a settings object that might be logged.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_TELEGRAM_API = "https://api.telegram.org"
DEFAULT_GRAPH_API = "https://graph.facebook.com/v25.0"
DEFAULT_ZALO_API = "https://openapi.zalo.me"
DEFAULT_ZALO_OAUTH = "https://oauth.zaloapp.com/v4/oa"
DEFAULT_ZALOBOT_API = "https://bot-api.zaloplatforms.com"


class SettingsError(ValueError):
    """A setting has a value Loa cannot use; the message is for the operator (Vietnamese)."""


@dataclass(frozen=True, slots=True)
class Settings:
    config: Path
    data_dir: Path
    database_url: str
    redis_url: str | None = None
    redis_prefix: str = "loa:"  # key prefix: several deployments can share one Redis
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""  # "" → http://host:port (only the browser and tests use it then)
    telegram_api: str = DEFAULT_TELEGRAM_API
    graph_api: str = DEFAULT_GRAPH_API
    zalo_api: str = DEFAULT_ZALO_API
    zalo_oauth: str = DEFAULT_ZALO_OAUTH
    zalobot_api: str = DEFAULT_ZALOBOT_API
    session_ttl: int = 30 * 24 * 3600  # seconds an idle session is kept
    lock_ttl: float = 30.0  # seconds a worker's lease on a conversation lasts
    # Channel credentials of the deployment's one Meta app and one Zalo app (docs/channels.md).
    # Per-district tokens are `$VAR` references in flows.yaml, resolved by bots.channels.
    # Secrets are left out of repr, so logging a Settings never shows them.
    messenger_app_id: str = ""
    messenger_app_secret: str = field(default="", repr=False)
    messenger_verify_token: str = field(default="", repr=False)
    zalo_app_id: str = ""
    zalo_app_secret: str = field(default="", repr=False)
    zalo_oa_secret_key: str = field(default="", repr=False)
    zalo_code_verifier: str = field(default="", repr=False)
    zalo_site_verification: tuple[str, ...] = ()  # domain verification codes (public)
    channel_health_every: float = 300.0  # seconds between channel health checks (0: never)
    # Free space under the data directory (bots/ops/diskguard.py): organisers are warned below
    # `disk_warn_mb`, new media is refused below `disk_min_mb`. None: 2048 / 500 MB, or 5 % /
    # 2 % of the disk when that is less. 0 turns a level off.
    disk_warn_mb: int | None = None
    disk_min_mb: int | None = None
    # Seconds a conversation an organiser took over stays with them without a console message
    # before it is handed back to the bot (docs/bang-dieu-khien.md, "Hand-over").
    handover_timeout: float = 7200.0
    # `loa serve` processes sharing one port (SO_REUSEPORT) and the Redis store; >1 needs Redis.
    processes: int = 1
    # Set by the supervising `loa serve` for each process it starts (LOA_PROCESS_INDEX); None
    # for a lone process. Only process 0 runs the deployment-wide jobs (bots.channels).
    process_index: int | None = None
    uvloop: bool = True  # run `loa serve` on uvloop when installed (LOA_UVLOOP=0: standard loop)

    @property
    def runs_singletons(self) -> bool:
        """Whether this process runs the jobs one deployment needs once: Telegram long polls
        (two pollers of one bot fight over getUpdates), proactive token refresh, health checks,
        the sweep of unjudged Zalo echoes."""
        return not self.process_index

    @property
    def base_url(self) -> str:
        """Where Loa is reachable from outside (media URLs platforms fetch)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def files_dir(self) -> Path:
        """Content-addressed files (evidence images)."""
        return self.data_dir / "files"

    @property
    def bundles_dir(self) -> Path:
        """Sources of every flow version ever loaded, by content hash."""
        return self.data_dir / "bundles"

    @property
    def state_path(self) -> Path:
        """The embedded SQLite conversation store, when no Redis is configured."""
        return self.data_dir / "state.sqlite3"


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: cần một số nguyên") from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r}: cần một số dương")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: cần một số") from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r}: cần một số dương")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A period in seconds; 0 turns the periodic job off."""
    raw = env.get(name, "").strip()
    if raw in ("0", "0.0"):
        return 0.0
    return _float(env, name, default)


def _megabytes(env: Mapping[str, str], name: str) -> int | None:
    """A size in MB; unset → None (the automatic default), 0 allowed (off)."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: cần một số nguyên (MB)") from None
    if value < 0:
        raise SettingsError(f"{name}={raw!r}: không được âm")
    return value


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path.resolve()}"


def from_env(env: Mapping[str, str] | None = None, *, create_dirs: bool = True) -> Settings:
    """Read every `LOA_*` setting; create the data directory unless told not to."""
    env = os.environ if env is None else env
    data_dir = Path(env.get("LOA_DATA_DIR") or "./var").expanduser()
    if create_dirs:
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SettingsError(
                f"LOA_DATA_DIR={data_dir}: không tạo được thư mục ({error})"
            ) from None
    data_dir = data_dir.resolve()
    return Settings(
        config=Path(env.get("LOA_CONFIG") or "./flows.yaml").expanduser(),
        data_dir=data_dir,
        database_url=env.get("LOA_DATABASE_URL") or sqlite_url(data_dir / "loa.sqlite3"),
        redis_url=env.get("LOA_REDIS_URL") or None,
        redis_prefix=env.get("LOA_REDIS_PREFIX") or "loa:",
        host=env.get("LOA_HOST") or "127.0.0.1",
        port=_int(env, "LOA_PORT", 8080),
        public_url=(env.get("LOA_PUBLIC_URL") or "").rstrip("/"),
        telegram_api=(env.get("LOA_TELEGRAM_API") or DEFAULT_TELEGRAM_API).rstrip("/"),
        graph_api=(env.get("LOA_GRAPH_API") or DEFAULT_GRAPH_API).rstrip("/"),
        zalo_api=(env.get("LOA_ZALO_API") or DEFAULT_ZALO_API).rstrip("/"),
        zalo_oauth=(env.get("LOA_ZALO_OAUTH") or DEFAULT_ZALO_OAUTH).rstrip("/"),
        zalobot_api=(env.get("LOA_ZALOBOT_API") or DEFAULT_ZALOBOT_API).rstrip("/"),
        session_ttl=_int(env, "LOA_SESSION_TTL", 30 * 24 * 3600),
        lock_ttl=_float(env, "LOA_LOCK_TTL", 30.0),
        messenger_app_id=(env.get("LOA_MESSENGER_APP_ID") or "").strip(),
        messenger_app_secret=(env.get("LOA_MESSENGER_APP_SECRET") or "").strip(),
        messenger_verify_token=(env.get("LOA_MESSENGER_VERIFY_TOKEN") or "").strip(),
        zalo_app_id=(env.get("LOA_ZALO_APP_ID") or "").strip(),
        zalo_app_secret=(env.get("LOA_ZALO_APP_SECRET") or "").strip(),
        zalo_oa_secret_key=(env.get("LOA_ZALO_OA_SECRET_KEY") or "").strip(),
        zalo_code_verifier=(env.get("LOA_ZALO_CODE_VERIFIER") or "").strip(),
        zalo_site_verification=tuple(
            code.strip()
            for code in (env.get("LOA_ZALO_SITE_VERIFICATION") or "").split(",")
            if code.strip()
        ),
        channel_health_every=_seconds(env, "LOA_CHANNEL_HEALTH_EVERY", 300.0),
        disk_warn_mb=_megabytes(env, "LOA_DISK_WARN_MB"),
        disk_min_mb=_megabytes(env, "LOA_DISK_MIN_MB"),
        handover_timeout=_float(env, "LOA_HANDOVER_TIMEOUT", 7200.0),
        processes=_int(env, "LOA_PROCESSES", 1),
        process_index=_index(env),
        uvloop=(env.get("LOA_UVLOOP") or "1").strip().lower() not in ("0", "false", "no", "off"),
    )


def _index(env: Mapping[str, str]) -> int | None:
    raw = env.get("LOA_PROCESS_INDEX", "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise SettingsError(f"LOA_PROCESS_INDEX={raw!r}: cần một số nguyên không âm")
    return int(raw)


def load(args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment, with the command line's explicit values on top."""
    settings = from_env(env)
    if args is None:
        return settings
    overrides: dict[str, object] = {}
    if getattr(args, "config", None):
        overrides["config"] = Path(args.config).expanduser()
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None):
        overrides["port"] = int(args.port)
    if getattr(args, "processes", None):
        if int(args.processes) < 1:
            raise SettingsError(f"--processes {args.processes}: cần một số dương")
        overrides["processes"] = int(args.processes)
    return replace(settings, **overrides) if overrides else settings  # type: ignore[arg-type]
