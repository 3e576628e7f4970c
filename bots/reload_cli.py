"""`loa reload`: check flows.yaml and make it live in every running `loa serve`.

    uv run loa reload                 # check, publish, wait until the local server has it
    uv run loa reload --wait 0        # do not wait

Decision (docs/bang-dieu-khien.md): the command does not signal a process. It does what a
reload does — check (every problem printed as `file:line:column`, exit 1, nothing changes),
archive the bundle by content hash in the data dir, record it as the deployment's current
version in the records database and announce it on Redis — and every server follows within
seconds, on this machine or another. It then asks the local server's /healthz until it reports
the new version. SIGHUP to `loa serve` does the same from inside that process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bots.runtime import Flows
    from bots.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="tệp kịch bản (LOA_CONFIG)")
    parser.add_argument("--wait", type=float, default=15.0,
                        help="chờ máy chủ trên máy này áp dụng tối đa bấy nhiêu giây "
                        "(mặc định 15; 0: không chờ)")


def _served_version(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # our own server's /healthz
            data = json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    version = data.get("flows") if isinstance(data, dict) else None
    return version if isinstance(version, str) else None


def _wait_for(url: str, version: str, seconds: float) -> str | None:
    """The version the local server reports once it has `version` (or at the deadline)."""
    deadline = time.monotonic() + seconds
    seen = _served_version(url)
    while seen != version and time.monotonic() < deadline:
        time.sleep(0.3)
        seen = _served_version(url)
    return seen


async def _publish(settings: Settings, flows: Flows) -> str:
    """Archive, record and announce `flows`; returns the version it replaces ("" if none)."""
    from bots.bundles import BundleArchive
    from bots.records import open_database
    from bots.reload import announce, read_current, sync_tree, write_current

    version = flows.version
    versions = {fid: flow.version for fid, flow in flows.compiled.flows.items()}
    BundleArchive(settings.bundles_dir).keep(
        version, flows.files, flows.base_dir, flows.media, versions
    )
    db = await open_database(settings.database_url)
    try:
        current = await read_current(db)
        previous = current.version if current is not None else ""
        await write_current(db, version, by="cli", now=datetime.now(UTC), previous=previous)
        await announce(settings.redis_url, settings.redis_prefix, version)
        await sync_tree(db, flows)
    finally:
        await db.close()
    return previous


def main(args: argparse.Namespace) -> int:
    import os

    from bots.reload import prepare
    from bots.runtime import FlowsInvalid
    from bots.settings import SettingsError, load

    try:
        settings = load(args)
    except SettingsError as error:
        print(f"Lỗi cấu hình: {error}", file=sys.stderr)
        return 2
    try:
        flows = prepare(settings.config, settings, os.environ, channels=True)
    except FlowsInvalid as error:
        for line in error.problems:
            print(line, file=sys.stderr)
        print(f"{settings.config}: kịch bản chưa hợp lệ nên KHÔNG được áp dụng; máy chủ vẫn "
              "chạy phiên bản cũ. Sửa các lỗi trên rồi chạy lại lệnh.", file=sys.stderr)
        return 1
    try:
        previous = asyncio.run(_publish(settings, flows))
    except Exception as error:  # database or data dir unusable
        print(f"Không công bố được phiên bản mới: {error}", file=sys.stderr)
        return 1
    short = flows.version[:12]
    if previous == flows.version:
        print(f"Kịch bản hợp lệ; phiên bản {short} đã đang chạy.")
    else:
        print(f"Kịch bản hợp lệ; đã công bố phiên bản {short}"
              + (f" (thay {previous[:12]})." if previous else "."))
    if args.wait > 0:
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        url = f"http://{host}:{settings.port}/healthz"
        seen = _wait_for(url, flows.version, args.wait)
        if seen == flows.version:
            print(f"Máy chủ tại http://{host}:{settings.port}/ đang chạy phiên bản {short}.")
        elif seen is None:
            print(f"Không thấy máy chủ nào tại http://{host}:{settings.port}/; máy chủ nào đang "
                  "chạy ở nơi khác sẽ tự áp dụng trong vài giây.")
        else:
            print(f"Máy chủ tại http://{host}:{settings.port}/ vẫn chạy phiên bản {seen[:12]} "
                  f"sau {args.wait:.0f} giây; xem nhật ký của máy chủ.", file=sys.stderr)
            return 3
    return 0


__all__ = ["add_arguments", "main"]
