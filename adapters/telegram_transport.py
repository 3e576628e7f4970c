"""Telegram Bot API calls over aiogram 3: sending, answering button taps, long polling.

`adapters.telegram` parses updates and renders messages on plain Bot-API dicts; this module
carries its calls. `AiogramTransport(token, api_base=...)` is the `Transport` the adapter takes:
`await transport(method, json_body)` returns the Bot-API reply as a dict (`{"ok": true,
"result": ...}` or `{"ok": false, "error_code", "description", "parameters"}`), so the adapter's
one error mapping (`adapters.telegram.error_for`) serves every transport.

- **aiogram is imported when a transport is made, never when this module is imported**: it costs
  seconds and ~150 MB, and a deployment without Telegram must never load it. Without aiogram
  installed, `make_transport` falls back to `HttpTransport` (the same calls over a plain
  aiohttp session) and says so once in the log.
- **The API server is a setting** (`LOA_TELEGRAM_API`): aiogram's `TelegramAPIServer.from_base`
  points both method calls and file downloads at it, so tests and proxies work unchanged.
- **Local media are uploaded.** An outbound image the flows ship (`/media/<name>`) is sent as a
  multipart upload of the file on disk (`local_file` resolves it), so Telegram works without a
  public URL (a polling deployment behind NAT); URLs and Telegram file ids pass through.
- **Replies skip aiogram's models.** `sendMessage`, `sendPhoto`/`sendDocument` by URL or file id
  and `answerCallbackQuery` are posted as the adapter rendered them, through aiogram's own HTTP
  session; building and validating aiogram's pydantic objects for them cost a third of a reply's
  CPU in the soak (docs/performance.md). Uploads, long polls and set-up calls stay typed.
- **Long polls** (`getUpdates` with `timeout`) get a request timeout of the poll plus a margin.
- The token is part of every request URL: it is never logged, and neither is an exception text
  of the HTTP library (which may quote the URL).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson

log = logging.getLogger(__name__)

DEFAULT_API = "https://api.telegram.org"
POLL_MARGIN = 10.0  # seconds a long poll's HTTP request may take beyond the poll itself
_UPLOADS = {"sendPhoto": "photo", "sendDocument": "document"}
# Sent with every reply: posted as the adapter rendered them (AiogramTransport._hot). Uploads of
# local files, long polls and set-up calls go through aiogram's typed methods.
_HOT = frozenset({"sendMessage", "sendPhoto", "sendDocument", "answerCallbackQuery"})
# Of those, the ones that never upload: their serialised body is posted as it is, not decoded
# and encoded again.
_PLAIN = frozenset({"sendMessage", "answerCallbackQuery"})

LocalFile = Callable[[str], Path | None]
"""`local_file(reference) -> Path | None`: the file on disk behind an outbound media reference
(`/media/<name>`), None for a URL or a Telegram file id."""


def _refusal(code: int, description: str, retry_after: float | None = None) -> dict[str, Any]:
    reply: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if retry_after is not None:
        reply["parameters"] = {"retry_after": retry_after}
    return reply


def _timeout_for(method: str, params: Mapping[str, Any], default: float) -> float:
    if method == "getUpdates":
        try:
            return float(params.get("timeout") or 0) + POLL_MARGIN
        except (TypeError, ValueError):
            return default + POLL_MARGIN
    return default


def _local(params: Mapping[str, Any], method: str, local_file: LocalFile | None) -> Path | None:
    field = _UPLOADS.get(method)
    if field is None or local_file is None:
        return None
    value = params.get(field)
    if not isinstance(value, str) or value.startswith(("http://", "https://")):
        return None
    return local_file(value)


class AiogramTransport:
    """The Bot API through an aiogram `Bot` (one per bot token). `close()` on shutdown."""

    def __init__(
        self,
        token: str,
        *,
        api_base: str = DEFAULT_API,
        local_file: LocalFile | None = None,
        timeout: float = 15.0,
    ) -> None:
        from aiogram import Bot
        from aiogram.client.session.aiohttp import AiohttpSession
        from aiogram.client.telegram import TelegramAPIServer
        from aiogram.utils.token import TokenValidationError

        session = AiohttpSession(
            api=TelegramAPIServer.from_base(api_base.rstrip("/")), timeout=timeout
        )
        self._session = session
        try:
            self._bot = Bot(token, session=session)
        except TokenValidationError:
            raise ValueError(
                "Mã bot Telegram không đúng dạng <số>:<chuỗi> (xem lại biến môi trường)."
            ) from None
        self._timeout = timeout
        self._local_file = local_file
        self._api_base = api_base.rstrip("/")
        self._plain: HttpTransport | None = None

    def __repr__(self) -> str:  # never show the token
        return f"AiogramTransport(bot_id={self._bot.id})"

    async def _hot(self) -> HttpTransport:
        """The replies' path: the body the adapter rendered, posted through aiogram's own HTTP
        session (its connector, proxy and API server), without building aiogram's pydantic
        method and result objects — they were a third of a reply's CPU under load and add
        nothing to JSON the adapter already checked against the platform's limits."""
        if self._plain is None:
            session = await self._session.create_session()
            self._plain = HttpTransport(
                self._bot.token, api_base=self._api_base, local_file=self._local_file,
                timeout=self._timeout, session=session,
            )
        return self._plain

    async def __call__(self, method: str, body: bytes) -> Mapping[str, Any]:
        if method in _PLAIN:
            return await (await self._hot())(method, body)
        params = orjson.loads(body)
        return await self.call(method, params if isinstance(params, dict) else {})

    async def call(self, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """One Bot-API method by its name, with its parameters as Bot-API JSON."""
        if method in _HOT and _local(params, method, self._local_file) is None:
            return await (await self._hot()).call(method, params)
        from aiogram import methods
        from aiogram.exceptions import (
            ClientDecodeError,
            TelegramAPIError,
            TelegramConflictError,
            TelegramEntityTooLarge,
            TelegramForbiddenError,
            TelegramNetworkError,
            TelegramNotFound,
            TelegramRetryAfter,
            TelegramServerError,
            TelegramUnauthorizedError,
        )
        from aiogram.types import FSInputFile
        from pydantic import ValidationError

        kind = getattr(methods, method[:1].upper() + method[1:], None)
        if not isinstance(kind, type) or not issubclass(kind, methods.TelegramMethod):
            return _refusal(400, f"Bad Request: unknown method {method}")
        values = dict(params)
        path = _local(values, method, self._local_file)
        if path is not None:
            values[_UPLOADS[method]] = FSInputFile(path)
        _pin_response(kind)
        try:
            call = kind(**values)
        except ValidationError as error:
            fields = ", ".join(str(e["loc"][0]) for e in error.errors() if e.get("loc"))
            return _refusal(400, f"Bad Request: invalid parameters of {method}: {fields}")
        try:
            wait = int(_timeout_for(method, values, self._timeout))
            result = await self._bot(call, request_timeout=wait)
        except TelegramRetryAfter as error:
            return _refusal(429, error.message, float(error.retry_after))
        except TelegramForbiddenError as error:
            return _refusal(403, error.message)
        except TelegramUnauthorizedError as error:
            return _refusal(401, error.message)
        except TelegramNotFound as error:
            return _refusal(404, error.message)
        except TelegramConflictError as error:
            return _refusal(409, error.message)
        except TelegramEntityTooLarge as error:
            return _refusal(413, error.message)
        except TelegramServerError as error:
            return _refusal(500, error.message)
        except TelegramNetworkError:
            return _refusal(504, "Không kết nối được tới Telegram (mạng hoặc hết thời gian chờ).")
        except ClientDecodeError:
            return _refusal(502, "Telegram trả lời không đọc được.")
        except TelegramAPIError as error:  # 400 and whatever aiogram adds next
            return _refusal(400, error.message)
        return {"ok": True, "result": _plain(result)}

    async def close(self) -> None:
        await self._bot.session.close()


_PINNED: dict[Any, Any] = {}


def _pin_response(kind: Any) -> None:
    """Keep aiogram's `Response[<result type>]` alive. aiogram parametrises that pydantic
    generic on every call, and pydantic caches parametrised classes only weakly: once a garbage
    collection drops it, the next call builds the class and its schema again (~1 ms, a tenth of
    a reply's CPU in the soak). A strong reference makes every call a cache hit."""
    returning = getattr(kind, "__returning__", None)
    if returning is not None and returning not in _PINNED:
        from aiogram.methods.base import Response

        _PINNED[returning] = Response[returning]  # type: ignore[valid-type]


def _plain(value: Any) -> Any:
    """aiogram's result objects back into Bot-API JSON (what `adapters.telegram` reads)."""
    dump = getattr(value, "model_dump", None)
    if dump is not None:
        return dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


class HttpTransport:
    """The same calls over a plain aiohttp session, for an installation without aiogram."""

    def __init__(
        self,
        token: str,
        *,
        api_base: str = DEFAULT_API,
        local_file: LocalFile | None = None,
        timeout: float = 15.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._url = f"{api_base.rstrip('/')}/bot{token}/"
        self._local_file = local_file
        self._timeout = timeout
        self._session = session
        self._own = session is None

    def __repr__(self) -> str:
        return "HttpTransport()"

    async def __call__(self, method: str, body: bytes) -> Mapping[str, Any]:
        if method in _PLAIN:  # the body goes out as the adapter serialised it
            return await self._post(method, body, {"Content-Type": "application/json"},
                                    self._timeout)
        params = orjson.loads(body)
        return await self.call(method, params if isinstance(params, dict) else {})

    async def call(self, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        path = _local(params, method, self._local_file)
        data: Any
        headers: dict[str, str] = {}
        if path is not None:
            form = aiohttp.FormData()
            for name, value in params.items():
                if name == _UPLOADS[method]:
                    continue
                form.add_field(
                    name, value if isinstance(value, str) else orjson.dumps(value).decode()
                )
            form.add_field(_UPLOADS[method], path.read_bytes(), filename=path.name)
            data = form
        else:
            data = orjson.dumps(dict(params))
            headers["Content-Type"] = "application/json"
        return await self._post(
            method, data, headers, _timeout_for(method, params, self._timeout)
        )

    async def _post(
        self, method: str, data: Any, headers: Mapping[str, str], timeout: float
    ) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                self._url + method, data=data, headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                status = response.status
                raw = await response.read()
        except TimeoutError:
            return _refusal(504, "Telegram không trả lời kịp.")
        except aiohttp.ClientError:
            return _refusal(504, "Không kết nối được tới Telegram.")
        try:
            reply = orjson.loads(raw)
        except orjson.JSONDecodeError:
            reply = None
        if isinstance(reply, dict) and "ok" in reply:
            return reply
        return _refusal(status if status >= 400 else 502, f"Telegram trả lời HTTP {status}.")

    async def close(self) -> None:
        if self._own and self._session is not None:
            await self._session.close()
            self._session = None


Transport = AiogramTransport | HttpTransport
_warned = False


def make_transport(
    token: str,
    *,
    api_base: str = DEFAULT_API,
    local_file: LocalFile | None = None,
    timeout: float = 15.0,
) -> Transport:
    """An aiogram transport, or the plain HTTP one when aiogram is not installed."""
    global _warned
    try:
        return AiogramTransport(token, api_base=api_base, local_file=local_file, timeout=timeout)
    except ImportError:
        if not _warned:
            _warned = True
            log.warning("telegram: aiogram is not installed; calling the Bot API over aiohttp")
        return HttpTransport(token, api_base=api_base, local_file=local_file, timeout=timeout)


__all__ = [
    "DEFAULT_API",
    "AiogramTransport",
    "HttpTransport",
    "LocalFile",
    "Transport",
    "make_transport",
]
