"""The secret key for citizen-ID numbers reported by cadres (stored only as keyed hashes).

`LOA_CITIZEN_KEY` when it is set (at least 16 characters); otherwise a random 32-byte key
generated on first use into `<data dir>/citizen-id.key` (mode 0600) and read from there ever
after. Every process of a deployment must use the same key — the hash is what finds a citizen
reported twice — so a deployment with several machines sets `LOA_CITIZEN_KEY` (or shares the
data directory). Losing or changing the key keeps old reports but no longer matches them with
new ones; back the key file up with the database (docs/bao-cao.md).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

KEY_ENV = "LOA_CITIZEN_KEY"
KEY_FILE = "citizen-id.key"
MIN_LENGTH = 16


class CitizenKeyError(ValueError):
    """The configured key cannot be used; the message is for the operator (Vietnamese)."""


def citizen_key(data_dir: Path | str, env: Mapping[str, str] | None = None) -> bytes:
    """The deployment's key: `LOA_CITIZEN_KEY`, else the key file in `data_dir` (created on
    first use)."""
    env = os.environ if env is None else env
    configured = (env.get(KEY_ENV) or "").strip()
    if configured:
        if len(configured) < MIN_LENGTH:
            raise CitizenKeyError(
                f"{KEY_ENV} quá ngắn: cần ít nhất {MIN_LENGTH} ký tự ngẫu nhiên "
                "(VD: tạo bằng lệnh `openssl rand -hex 32`)"
            )
        return configured.encode("utf-8")
    path = Path(data_dir) / KEY_FILE
    key = _read(path)
    if key is not None:
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = secrets.token_bytes(32)
    tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(fresh.hex() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    try:
        # A hard link appears whole or not at all, and never replaces an existing key: two
        # processes starting together end up with one key.
        os.link(tmp, path)
    except FileExistsError:
        key = _read(path)
        if key is None:
            raise CitizenKeyError(f"{path}: tệp khóa rỗng hoặc hỏng") from None
        return key
    finally:
        tmp.unlink(missing_ok=True)
    return fresh


def _read(path: Path) -> bytes | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    if not text:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise CitizenKeyError(f"{path}: tệp khóa không phải chuỗi hex") from None


def citizen_key_from_env() -> bytes:
    """The key as `loa serve` would find it from the environment alone (LOA_DATA_DIR)."""
    from bots.settings import from_env

    return citizen_key(from_env().data_dir)


__all__ = ["KEY_ENV", "KEY_FILE", "CitizenKeyError", "citizen_key", "citizen_key_from_env"]
