"""Downloading a platform's media: only from that platform's own hosts, capped, bounded in time.

- **Where.** Each channel has `Origins`: CDN domains (HTTPS on port 443, the domain or any
  subdomain) and the exact API base URLs the settings configure (`LOA_TELEGRAM_API`, ...), so a
  test or a proxy on `http://127.0.0.1:<port>` is allowed for exactly that host and port. Plain
  HTTP is allowed only for a configured base on a loopback address. Every URL is checked, the
  first and every redirect target (redirects are followed by hand, at most `max_redirects`).
- **How much.** The body is streamed; the download stops as soon as it exceeds `max_bytes`
  (and before it starts when the declared length is already over). Compressed transfer encodings
  are refused rather than inflated, so the cap is on what arrives.
- **How long.** Connect, per-read and total timeouts on every request.
- **Secrets.** Telegram's token is part of its URLs and CDN links carry signatures: errors and
  logs show `redact(url)` (no query, `/bot<token>` masked) and drop the library's exception
  (whose text holds the URL).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from yarl import URL

from bots.media.errors import DownloadFailed, HostNotAllowed, TooLarge
from bots.media.limits import MAX_BYTES
from flows.vocab import Channel

log = logging.getLogger("loa.media")

CHUNK = 64 * 1024
REDIRECTS = frozenset({301, 302, 303, 307, 308})

# Where each platform serves the media people send (research/channels.md): Messenger attachment
# URLs are signed links on Meta's CDNs (scontent*.fbcdn.net for photos, cdn.fbsbx.com and
# lookaside.fbsbx.com for files); Zalo OA and the Zalo Bot API serve from Zalo's CDNs (*.zdn.vn,
# stickers on *.zadn.vn). Telegram files come only from the Bot API host (`getFile`, then
# `/file/bot<token>/<path>`): no CDN entry, the configured API base is the whole list.
CDN_DOMAINS: Mapping[Channel, tuple[str, ...]] = {
    Channel.MESSENGER: ("fbcdn.net", "fbsbx.com"),
    Channel.ZALO: ("zdn.vn", "zadn.vn"),
    Channel.ZALOBOT: ("zdn.vn", "zadn.vn"),
    Channel.TELEGRAM: (),
}

_LOOPBACK_NAMES = frozenset({"localhost"})
_BOT_TOKEN = re.compile(r"/(file/)?bot[^/]+")


def redact(url: URL | str) -> str:
    """A URL fit for a log line: no query or fragment (signatures), no bot token."""
    u = URL(url) if isinstance(url, str) else url
    try:
        shown = str(u.with_query(None).with_fragment(None).with_user(None))
    except ValueError:  # a relative or odd URL: show only what cannot hold a secret
        shown = u.path
    return _BOT_TOKEN.sub(lambda m: f"/{m.group(1) or ''}bot***", shown)


def _host(url: URL) -> str:
    return (url.host or "").lower().rstrip(".")


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Origins:
    """The hosts one channel's media may come from."""

    domains: frozenset[str] = frozenset()  # HTTPS :443 on the domain or any subdomain
    exact: frozenset[tuple[str, str, int]] = frozenset()  # (scheme, host, port): configured bases

    @classmethod
    def of(cls, domains: Iterable[str] = (), bases: Iterable[str] = ()) -> Origins:
        """`bases`: configured base URLs (API hosts, test servers). HTTPS ones allow that host
        and port; HTTP ones only when the host is a loopback address (local fakes), else they
        allow HTTPS to the same host."""
        exact: set[tuple[str, str, int]] = set()
        for base in bases:
            if not base:
                continue
            u = URL(base)
            host = _host(u)
            if not host or u.port is None:
                continue
            if u.scheme == "https":
                exact.add(("https", host, u.port))
            elif u.scheme == "http":
                if _is_loopback(host):
                    exact.add(("http", host, u.port))
                else:
                    exact.add(("https", host, 443))
        return cls(frozenset(d.lower().strip(".") for d in domains if d), frozenset(exact))

    def allows(self, url: URL) -> bool:
        if not url.is_absolute() or url.user is not None or url.password is not None:
            return False
        host, scheme, port = _host(url), url.scheme, url.port
        if not host or port is None:
            return False
        if (scheme, host, port) in self.exact:
            return True
        if scheme != "https" or port != 443:
            return False
        return any(host == d or host.endswith("." + d) for d in self.domains)

    def check(self, url: URL) -> None:
        if not self.allows(url):
            raise HostNotAllowed(f"not one of the platform's media hosts: {redact(url)}")

    def __or__(self, other: Origins) -> Origins:
        return Origins(self.domains | other.domains, self.exact | other.exact)


def channel_origins(
    settings: Any, extra: Mapping[Channel, Sequence[str]] | None = None
) -> dict[Channel, Origins]:
    """Each channel's origins from the settings' API bases (`telegram_api`, `graph_api`,
    `zalo_api`, `zalobot_api`) plus the CDN domains; `extra`: more base URLs per channel (tests,
    a caching proxy). Channels without platform media (browser, terminal) get none."""
    bases: dict[Channel, list[str]] = {
        Channel.MESSENGER: [settings.graph_api],
        Channel.ZALO: [settings.zalo_api],
        Channel.ZALOBOT: [settings.zalobot_api],
        Channel.TELEGRAM: [settings.telegram_api],
    }
    for channel, more in (extra or {}).items():
        bases.setdefault(channel, []).extend(more)
    return {
        channel: Origins.of(CDN_DOMAINS.get(channel, ()), urls) for channel, urls in bases.items()
    }


@dataclass(frozen=True, slots=True)
class FetchLimits:
    max_bytes: int = MAX_BYTES
    max_redirects: int = 3
    connect_timeout: float = 5.0
    read_timeout: float = 10.0  # between two reads of the body
    total_timeout: float = 15.0  # one request, redirects each count anew
    chunk: int = CHUNK


class Fetcher:
    """An HTTP client for platform media. Owns its `aiohttp.ClientSession` (created on first use,
    closed by `close()`) unless one is given (then its timeouts and headers are the caller's)."""

    def __init__(
        self, limits: FetchLimits | None = None, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.limits = limits or FetchLimits()
        self.session = session
        self._owned = False

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            lim = self.limits
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=lim.total_timeout,
                    sock_connect=lim.connect_timeout,
                    sock_read=lim.read_timeout,
                ),
                auto_decompress=False,  # a gzip bomb must meet the cap, not the inflater
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"Accept-Encoding": "identity", "User-Agent": "Loa media fetch"},
                trust_env=False,
            )
            self._owned = True
        return self.session

    async def close(self) -> None:
        if self.session is not None and self._owned and not self.session.closed:
            await self.session.close()
        self.session = None

    async def fetch(
        self,
        url: str | URL,
        origins: Origins,
        *,
        max_bytes: int | None = None,
        api_reply: bool = False,
    ) -> bytes:
        """The body at `url`, following at most `max_redirects` redirects, each target checked
        against `origins`. Raises HostNotAllowed, TooLarge, DownloadFailed. `api_reply`: a 4xx
        body is returned too (a Bot API explains its refusals in JSON)."""
        cap = self.limits.max_bytes if max_bytes is None else max_bytes
        try:
            # as the platform wrote it: requoting could break a signed link's query
            current = URL(url, encoded=True) if isinstance(url, str) else url
        except (ValueError, TypeError):
            raise DownloadFailed("not a URL") from None
        session = self._session()
        for _ in range(self.limits.max_redirects + 1):
            origins.check(current)
            try:
                async with session.get(current, allow_redirects=False) as response:
                    if response.status in REDIRECTS:
                        location = response.headers.get("Location")
                        if not location:
                            raise DownloadFailed(f"redirect without Location: {redact(current)}")
                        try:
                            current = current.join(URL(location, encoded=True))
                        except (ValueError, TypeError):
                            raise DownloadFailed(f"bad redirect from {redact(current)}") from None
                        continue
                    return await self._body(response, current, cap, api_reply)
            except (DownloadFailed, TooLarge):
                raise
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as error:
                # Drop the library's exception: its text (and traceback) carries the URL.
                raise DownloadFailed(
                    f"{type(error).__name__} fetching {redact(current)}", transient=True
                ) from None
        raise DownloadFailed(f"more than {self.limits.max_redirects} redirects: {redact(url)}")

    async def _body(
        self, response: aiohttp.ClientResponse, url: URL, cap: int, api_reply: bool = False
    ) -> bytes:
        if response.status != 200 and not (api_reply and 400 <= response.status < 500):
            transient = response.status >= 500 or response.status in (408, 429)
            raise DownloadFailed(f"HTTP {response.status} from {redact(url)}", transient=transient)
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise DownloadFailed(f"compressed body ({encoding}) from {redact(url)}")
        declared = response.content_length
        if declared is not None and declared > cap:
            response.close()
            raise TooLarge(f"{declared} bytes declared, cap {cap}: {redact(url)}")
        body = bytearray()
        async for chunk in response.content.iter_chunked(self.limits.chunk):
            body += chunk
            if len(body) > cap:
                response.close()  # drop the connection rather than drain the rest
                raise TooLarge(f"over {cap} bytes: {redact(url)}", read=len(body))
        return bytes(body)

    async def telegram_file(
        self, api: str, token: str, file_id: str, origins: Origins, *, max_bytes: int | None = None
    ) -> bytes:
        """A Telegram file: `getFile(file_id)` → `file_path`, then `<api>/file/bot<token>/<path>`.
        A file over the Bot API's own download limit (20 MB) is refused by `getFile`."""
        cap = self.limits.max_bytes if max_bytes is None else max_bytes
        base = api.rstrip("/")
        query = URL(f"{base}/bot{token}/getFile").with_query(file_id=file_id)
        reply = await self._json(query, origins)
        if not reply.get("ok"):
            description = str(reply.get("description") or "")
            if "too big" in description.lower():
                raise TooLarge("Telegram: file is too big for the Bot API")
            # `description` never holds the token; keep it short anyway
            raise DownloadFailed(
                f"Telegram getFile refused ({reply.get('error_code')}): {description[:120]}",
                transient=reply.get("error_code") in (429, 500, 502, 503, 504),
            )
        result = reply.get("result")
        if not isinstance(result, dict) or not isinstance(result.get("file_path"), str):
            raise DownloadFailed("Telegram getFile: no file_path in the reply")
        size = result.get("file_size")
        if isinstance(size, int) and size > cap:
            raise TooLarge(f"Telegram file of {size} bytes, cap {cap}")
        path = result["file_path"].lstrip("/")
        if ".." in path.split("/"):
            raise DownloadFailed("Telegram getFile: odd file_path")
        return await self.fetch(URL(f"{base}/file/bot{token}/{path}"), origins, max_bytes=cap)

    async def _json(self, url: URL, origins: Origins) -> dict[str, Any]:
        body = await self.fetch(url, origins, max_bytes=64 * 1024, api_reply=True)
        try:
            reply = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise DownloadFailed(f"not JSON from {redact(url)}") from None
        if not isinstance(reply, dict):
            raise DownloadFailed(f"unexpected reply from {redact(url)}")
        return reply


__all__ = [
    "CDN_DOMAINS",
    "MAX_BYTES",
    "FetchLimits",
    "Fetcher",
    "Origins",
    "channel_origins",
    "redact",
]
