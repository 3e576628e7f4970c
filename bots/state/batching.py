"""Lua script calls of many conversations in one Redis round trip.

redis-py spends ~100–130 µs of CPU on every command it sends (pool checkout, packing, a socket
write, waking the caller), several times what Redis spends running a Loa script. Under load
many conversations call scripts at the same moment, so `ScriptRunner` gathers the calls made
during one event-loop iteration and sends them as one pipeline (no MULTI: each script is atomic
on its own, and they touch different conversations): one pool checkout, one write, one read for
the lot. A lone call costs one loop iteration more, nothing else.

A script the server does not know (Redis restarted and lost its script cache) is run again on
its own through redis-py's `AsyncScript`, which loads it. A connection error fails every call of
the batch, exactly as it would have failed each of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ConnectionError, NoScriptError

Call = tuple[Any, Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]


class ScriptRunner:
    """The first caller of an iteration leads: it lets the loop run once, takes every call
    queued meanwhile and runs them with its own in one pipeline; the others wait for their
    result. A lone call then costs one loop iteration and no task or pipeline."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._joining: list[Call] | None = None  # the calls joining the current leader's batch
        self._orphans: set[asyncio.Task[None]] = set()  # batches whose leader was cancelled

    async def __call__(self, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """`await script(keys=keys, args=args)`, batched with this iteration's other calls."""
        if self._joining is not None:  # a leader is gathering: join its batch
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._joining.append((script, keys, args, future))
            return await future
        joining: list[Call] = []
        self._joining = joining
        try:
            await asyncio.sleep(0)  # this iteration's other calls join
        except asyncio.CancelledError:
            self._joining = None
            if joining:  # the others still need their round trip
                task = asyncio.get_running_loop().create_task(self._run(joining))
                self._orphans.add(task)
                task.add_done_callback(self._orphans.discard)
            raise
        self._joining = None
        if not joining:
            return await script(keys=keys, args=args)
        mine: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._run([(script, keys, args, mine), *joining])
        return mine.result()

    async def _run(self, batch: list[Call]) -> None:
        """Run the batch in one pipeline, settling every call's future (never raises)."""
        pipe = self.client.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        try:
            results = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            error = ConnectionError("the batch's leader was cancelled mid-call")
            for *_, future in batch:
                _fail(future, error)
            raise
        except Exception as error:  # the connection: every call of the batch failed
            for *_, future in batch:
                _fail(future, error)
            return
        for (script, keys, args, future), result in zip(batch, results, strict=True):
            if isinstance(result, NoScriptError):
                try:
                    result = await script(keys=keys, args=args)  # loads it, runs it
                except Exception as error:
                    _fail(future, error)
                    continue
            if isinstance(result, Exception):
                _fail(future, result)
            else:
                _settle(future, result)


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # the caller may have been cancelled meanwhile
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


__all__ = ["ScriptRunner"]
