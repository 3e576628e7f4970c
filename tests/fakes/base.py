"""What every fake platform server shares: a local aiohttp app on a free loopback port,
started and stopped with `async with`."""

from __future__ import annotations

from typing import Self

from aiohttp import web


class FakeServer:
    """Subclasses add their routes (`routes`) and release handlers they hold back on close
    (`on_close`)."""

    url: str = ""
    client_max_size: int = 1024**2  # aiohttp's default request body limit
    _runner: web.AppRunner | None = None

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def on_close(self) -> None:
        """Let delayed handlers finish, so shutdown does not wait for them."""

    async def start(self) -> Self:
        app = web.Application(client_max_size=self.client_max_size)
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def close(self) -> None:
        self.on_close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
