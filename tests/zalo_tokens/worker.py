"""One "server process" for the multi-process token tests (run with `python worker.py`).

    python worker.py <database url> <oauth url> <app id> <app secret> <oa id> <mode> <lease s>

Opens the records database, builds a keeper, prints `ready`, waits for a line on stdin, asks
for the OA's access token and prints `{"token": ..., "seconds": ...}`. Modes:

- `normal`: just that.
- `hang-after-lease`: holding the lease, it prints `leased` instead of calling Zalo and waits
  forever (the test kills it with SIGKILL).
- `die-after-refresh`: Zalo rotates the pair, then the process kills itself with SIGKILL before
  the new pair is saved.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from datetime import timedelta
from typing import Any

import aiohttp

import bots.zalo_tokens
from adapters.zalo import TokenPair
from bots.records.db import open_database
from bots.zalo_tokens import ZaloTokenKeeper

real_refresh = bots.zalo_tokens.refresh_tokens


async def hang_after_lease(*args: Any, **kwargs: Any) -> TokenPair:
    print("leased", flush=True)
    await asyncio.sleep(3600)
    raise AssertionError("should have been killed")


async def die_after_refresh(*args: Any, **kwargs: Any) -> TokenPair:
    await real_refresh(*args, **kwargs)
    print("refreshed", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("should be dead")


async def main(
    url: str, oauth: str, app_id: str, secret: str, oa_id: str, mode: str, lease: float
) -> None:
    if mode == "hang-after-lease":
        bots.zalo_tokens.refresh_tokens = hang_after_lease  # type: ignore[assignment]
    elif mode == "die-after-refresh":
        bots.zalo_tokens.refresh_tokens = die_after_refresh  # type: ignore[assignment]
    db = await open_database(url, migrate=False)
    try:
        async with aiohttp.ClientSession() as http:
            keeper = ZaloTokenKeeper(
                db, http, oauth, app_id, secret, lease=timedelta(seconds=lease)
            )
            await keeper.status(oa_id)  # connect before the start signal
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            started = time.monotonic()
            token = await keeper.access_token(oa_id)
            seconds = time.monotonic() - started
            print(json.dumps({"token": token, "seconds": seconds}), flush=True)
    finally:
        await db.close()


if __name__ == "__main__":
    url, oauth, app_id, secret, oa_id, mode, lease = sys.argv[1:8]
    asyncio.run(main(url, oauth, app_id, secret, oa_id, mode, float(lease)))
