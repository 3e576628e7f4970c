"""Lua script calls of many conversations in one Redis round trip.

redis-py spends ~100–130 µs of CPU on every command it sends (pool checkout, packing, a socket
write, waking the caller), several times what Redis spends running a Loa script. Under load
many conversations call scripts at the same moment, so `ScriptRunner` queues the calls made
during one event-loop iteration and sends them as one pipeline (no MULTI: each script is atomic
on its own, and they touch different conversations) on the next iteration: one pool checkout,
one write, one read for the lot. A lone call costs one loop iteration more, nothing else.

A script the server does not know (Redis restarted and lost its script cache) is run again on
its own through redis-py's `AsyncScript`, which loads it. A connection error fails every call of
the batch, exactly as it would have failed each of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError

MAX_BATCH = 512  # calls in one pipeline; more wait for the next


class ScriptRunner:
    def __init__(self, client: Any) -> None:
        self.client = client
        self._queue: list[tuple[Any, Sequence[Any], Sequence[Any], asyncio.Future[Any]]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """`await script(keys=keys, args=args)`, batched with this iteration's other calls."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((script, keys, args, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        if self._queue:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self, batch: list[tuple[Any, Sequence[Any], Sequence[Any], asyncio.Future[Any]]]
    ) -> None:
        if len(batch) == 1:
            script, keys, args, future = batch[0]
            try:
                result = await script(keys=keys, args=args)
            except Exception as error:
                _fail(future, error)
            else:
                _settle(future, result)
            return
        pipe = self.client.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        try:
            results = await pipe.execute(raise_on_error=False)
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
