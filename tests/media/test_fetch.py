"""Downloading: the platform's own hosts only (every redirect checked), capped, timed, no secrets
in errors. Against a fake CDN and a fake Telegram Bot API on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time

import pytest
from yarl import URL

from bots.media.errors import DownloadFailed, HostNotAllowed, TooLarge
from bots.media.fetch import CHUNK, Fetcher, FetchLimits, Origins, channel_origins, redact
from bots.settings import from_env
from flows.vocab import Channel
from tests.media.conftest import TOKEN, FakeCdn, local_origins, screenshot


async def test_downloads_an_image_from_an_allowed_host(cdn: FakeCdn, fetcher: Fetcher) -> None:
    image = screenshot(1)
    cdn.files["a.png"] = (image, "image/png")
    body = await fetcher.fetch(f"{cdn.url}/img/a.png?oh=sig&oe=65F0", local_origins(cdn))
    assert body == image


async def test_a_signed_link_is_requested_byte_exact(cdn: FakeCdn, fetcher: Fetcher) -> None:
    cdn.files["a.png"] = (screenshot(1), "image/png")
    signed = "/img/a.png?_nc_cat=1&oh=03_Q7cD%2Bx%3D%7E&oe=65F0"
    assert await fetcher.fetch(cdn.url + signed, local_origins(cdn))
    assert cdn.raw == [signed]


async def test_redirect_to_a_foreign_host_is_refused(cdn: FakeCdn, fetcher: Fetcher) -> None:
    url = URL(f"{cdn.url}/to").with_query(location="https://evil.example/steal.png")
    with pytest.raises(HostNotAllowed):
        await fetcher.fetch(url, local_origins(cdn))


async def test_redirect_to_a_reachable_but_unlisted_host_is_never_requested(
    cdn: FakeCdn, fetcher: Fetcher
) -> None:
    # Same server, other name: reachable, so only the allowlist can stop it.
    cdn.files["a.png"] = (screenshot(1), "image/png")
    target = f"http://localhost:{cdn.port}/img/a.png"
    url = URL(f"{cdn.url}/to").with_query(location=target)
    with pytest.raises(HostNotAllowed):
        await fetcher.fetch(url, local_origins(cdn))
    assert cdn.seen == ["/to"]


async def test_redirect_chain_to_allowed_hosts_is_followed(
    cdn: FakeCdn, cdn2: FakeCdn, fetcher: Fetcher
) -> None:
    image = screenshot(2)
    cdn2.files["b.png"] = (image, "image/png")
    # cdn → cdn2 /hop/2 → /hop/1 → /img: three redirects, across two allowed hosts
    url = URL(f"{cdn.url}/to").with_query(location=f"{cdn2.url}/hop/2/b.png")
    body = await fetcher.fetch(url, local_origins(cdn, cdn2))
    assert body == image
    assert cdn2.seen == ["/hop/2/b.png", "/hop/1/b.png", "/img/b.png"]


async def test_too_many_redirects_fail(cdn: FakeCdn, fetcher: Fetcher) -> None:
    cdn.files["a.png"] = (screenshot(1), "image/png")
    assert await fetcher.fetch(f"{cdn.url}/hop/3/a.png", local_origins(cdn))
    with pytest.raises(DownloadFailed, match="redirects"):
        await fetcher.fetch(f"{cdn.url}/hop/4/a.png", local_origins(cdn))
    assert "/img/a.png" not in cdn.seen[4:]


async def test_a_body_over_the_cap_is_aborted_early(cdn: FakeCdn) -> None:
    cap = 256 * 1024
    client = Fetcher(FetchLimits(max_bytes=cap))
    try:
        with pytest.raises(TooLarge) as caught:
            await client.fetch(f"{cdn.url}/huge", local_origins(cdn))
    finally:
        await client.close()
    assert cap < caught.value.read <= cap + CHUNK
    # the server stops sending once the client hangs up (kernel buffers hold some megabytes)
    await asyncio.wait_for(cdn.huge_done.wait(), timeout=10)
    assert cdn.huge_sent < cdn.huge_total // 4


async def test_a_declared_size_over_the_cap_is_refused_before_reading(
    cdn: FakeCdn, fetcher: Fetcher
) -> None:
    started = time.monotonic()
    with pytest.raises(TooLarge) as caught:
        await fetcher.fetch(f"{cdn.url}/declared", local_origins(cdn))
    assert caught.value.read == 0
    assert time.monotonic() - started < 1.5  # did not wait for the body


async def test_a_slow_server_times_out(cdn: FakeCdn) -> None:
    client = Fetcher(FetchLimits(read_timeout=0.3, total_timeout=1.0))
    started = time.monotonic()
    try:
        with pytest.raises(DownloadFailed) as caught:
            await client.fetch(f"{cdn.url}/slow", local_origins(cdn))
    finally:
        await client.close()
    assert caught.value.transient
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(("status", "transient"), [(404, False), (403, False), (503, True)])
async def test_http_errors(cdn: FakeCdn, fetcher: Fetcher, status: int, transient: bool) -> None:
    with pytest.raises(DownloadFailed, match=f"HTTP {status}") as caught:
        await fetcher.fetch(f"{cdn.url}/status/{status}", local_origins(cdn))
    assert caught.value.transient is transient


async def test_compressed_bodies_are_refused_not_inflated(cdn: FakeCdn, fetcher: Fetcher) -> None:
    cdn.files["a.png"] = (screenshot(1), "image/png")
    with pytest.raises(DownloadFailed, match="gzip"):
        await fetcher.fetch(f"{cdn.url}/gzip/a.png", local_origins(cdn))


# -- the allowlist ------------------------------------------------------------------------------


def _settings(**env: str):  # type: ignore[no-untyped-def]
    return from_env({"LOA_DATA_DIR": "/nonexistent", **env}, create_dirs=False)


@pytest.mark.parametrize(
    ("channel", "url", "allowed"),
    [
        (Channel.MESSENGER, "https://scontent.xx.fbcdn.net/v/t1.15752-9/a.png?oe=1", True),
        (Channel.MESSENGER, "https://cdn.fbsbx.com/v/t59/file.pdf", True),
        (Channel.MESSENGER, "https://fbcdn.net/a.png", True),
        (Channel.MESSENGER, "https://evilfbcdn.net/a.png", False),
        (Channel.MESSENGER, "https://scontent.fbcdn.net.evil.com/a.png", False),
        (Channel.MESSENGER, "http://scontent.xx.fbcdn.net/a.png", False),  # https only
        (Channel.MESSENGER, "https://scontent.xx.fbcdn.net:8443/a.png", False),
        (Channel.MESSENGER, "https://me@scontent.xx.fbcdn.net/a.png", False),
        (Channel.MESSENGER, "https://f21-zpc.zdn.vn/a.jpg", False),  # Zalo's CDN, not Meta's
        (Channel.ZALO, "https://f21-zpc.zdn.vn/3785/a.jpg", True),
        (Channel.ZALO, "https://scontent.xx.fbcdn.net/a.png", False),
        (Channel.ZALOBOT, "https://bot-api.zaloplatforms.com/some/photo.jpg", True),
        (Channel.TELEGRAM, "https://api.telegram.org/file/bot1:x/photos/a.jpg", True),
        (Channel.TELEGRAM, "https://t.me/a.jpg", False),
        (Channel.WEBCHAT, "https://scontent.xx.fbcdn.net/a.png", False),
    ],
)
def test_each_channel_allows_only_its_platform(channel: Channel, url: str, allowed: bool) -> None:
    origins = channel_origins(_settings()).get(channel, Origins())
    assert origins.allows(URL(url)) is allowed


def test_configured_local_bases_allow_plain_http_for_exactly_that_port() -> None:
    origins = channel_origins(_settings(LOA_TELEGRAM_API="http://127.0.0.1:5555"))
    telegram = origins[Channel.TELEGRAM]
    assert telegram.allows(URL("http://127.0.0.1:5555/file/bot1:x/a.jpg"))
    assert not telegram.allows(URL("http://127.0.0.1:5556/file/bot1:x/a.jpg"))
    assert not telegram.allows(URL("https://api.telegram.org/file/bot1:x/a.jpg"))
    # a non-loopback base given over http is only trusted over https
    remote = Origins.of(bases=["http://media-proxy.example:80"])
    assert not remote.allows(URL("http://media-proxy.example/a.png"))
    assert remote.allows(URL("https://media-proxy.example/a.png"))


def test_redact_hides_the_token_and_the_signature() -> None:
    shown = redact(f"https://api.telegram.org/file/bot{TOKEN}/photos/a.jpg?oh=abc&oe=123")
    assert "SECRET" not in shown and "oh=" not in shown
    assert shown == "https://api.telegram.org/file/bot***/photos/a.jpg"


# -- Telegram: getFile, then the file URL on the Bot API host ------------------------------------


async def test_telegram_get_file_then_download(cdn: FakeCdn, fetcher: Fetcher) -> None:
    image = screenshot(3)
    cdn.tg_files["AgACfile"] = ("photos/file_7.jpg", image)
    body = await fetcher.telegram_file(cdn.url, TOKEN, "AgACfile", local_origins(cdn))
    assert body == image
    assert cdn.seen == [f"/bot{TOKEN}/getFile", f"/file/bot{TOKEN}/photos/file_7.jpg"]


async def test_telegram_refusals_never_show_the_token(cdn: FakeCdn, fetcher: Fetcher) -> None:
    origins = local_origins(cdn)
    with pytest.raises(DownloadFailed) as caught:
        await fetcher.telegram_file(cdn.url, TOKEN, "unknown", origins)
    assert "invalid file_id" in str(caught.value)
    with pytest.raises(DownloadFailed) as wrong_token:
        await fetcher.telegram_file(cdn.url, "999:WRONG-secret", "x", origins)
    assert "401" in str(wrong_token.value)
    assert "SECRET" not in str(caught.value) and "WRONG" not in str(wrong_token.value)


async def test_telegram_too_big_is_too_large(cdn: FakeCdn, fetcher: Fetcher) -> None:
    origins = local_origins(cdn)
    with pytest.raises(TooLarge):
        await fetcher.telegram_file(cdn.url, TOKEN, "too-big", origins)
    # a file_size over our cap is refused before the download starts
    cdn.tg_files["big"] = ("documents/big.png", b"x" * 10)
    cdn.tg_sizes["big"] = 50 * 2**20
    with pytest.raises(TooLarge):
        await fetcher.telegram_file(cdn.url, TOKEN, "big", origins)
    assert not any(path.startswith("/file/") for path in cdn.seen)


async def test_telegram_download_host_must_be_allowed(cdn: FakeCdn, fetcher: Fetcher) -> None:
    cdn.tg_files["f"] = ("photos/a.jpg", screenshot(1))
    with pytest.raises(HostNotAllowed):
        await fetcher.telegram_file(cdn.url, TOKEN, "f", Origins())
    assert cdn.seen == []
