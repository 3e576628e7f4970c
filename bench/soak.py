"""Soak: signed Telegram webhooks at a fixed rate into a real `loa serve` (Redis store), replies
to a fake Bot API that answers each call after 200 ms; loopback only, bounded in count and time.

    uv run python -m bench.soak                              # 500 msg/s for 30 s, 40 bots
    uv run python -m bench.soak --rate 200 --seconds 10 --json

Three processes: this driver, `loa serve` (LOA_REDIS_URL, a unique key prefix deleted after)
and the fake Bot API (`python -m bench.soak --fake-telegram PORT`). Each district has its own
bot (Telegram allows a bot ~30 messages/s, so 500 msg/s of inbound, answered with two messages
each, needs ~40 bots: the rate limits are Loa's real ones). Users first send /start (warm-up,
not measured), then one text each at a time, spread over many users so that no chat exceeds
Telegram's ~1 message/s. Every text is unique (`s<n>`), and the echo flow answers
"Đã nhận: s<n>" then asks again, so the fake can tell which inbound each reply answers.

Reported: webhook acknowledgement latency p50/p99/max (request sent → HTTP 200, measured here),
end-to-end reply latency (request sent → the fake received "Đã nhận: s<n>"; the fake then takes
200 ms to answer, which holds the sender before the turn's second reply), the server's
event-loop lag (its /metrics gauge, sampled every second), messages lost (acknowledged but never
answered within the drain time) and duplicated (answered more than once), and the rate achieved.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bots.supervisor import free_port

REPO = Path(__file__).resolve().parents[1]
DELAY = 0.2  # seconds the fake Bot API takes to answer every call

FLOWS_HEAD = """\
organisations:
"""
DISTRICT = """\
  d{n:02d}:
    name: Đơn vị thử tải {n}
    channels:
      telegram: {{token: $SOAK_TG_TOKEN_{n}, secret_token: $SOAK_TG_SECRET_{n}}}
    menu: nhac_lai
"""
FLOWS_TAIL = """\
flows:
  nhac_lai:
    title: Nhắc lại
    steps:
      - id: hoi
        ask: Bạn gửi gì?
        expect: text
        save: x
      - say: "Đã nhận: {x}"
        goto: hoi
"""


def token(n: int) -> str:
    return f"{700000 + n}:soak-bot-token-{n:02d}"


def secret(n: int) -> str:
    return f"soak-secret-{n:02d}"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


# -- the fake Bot API (its own process) ------------------------------------------------------------


def run_fake(port: int) -> None:
    """Answer every Bot-API call after DELAY; remember when each sendMessage arrived."""
    from aiohttp import web

    received: list[tuple[float, str, str]] = []  # (time, chat id, text)
    ids = iter(range(1, 1 << 62))

    async def call(request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params: dict[str, Any] = {}
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                params[part.name or ""] = (await part.read()).decode()  # type: ignore[union-attr]
        elif request.content_type == "application/x-www-form-urlencoded":
            params = dict(await request.post())
        else:
            raw = await request.read()
            if raw:
                params = json.loads(raw)
        if method == "sendMessage":
            received.append((time.time(), str(params.get("chat_id")), str(params.get("text"))))
        await asyncio.sleep(DELAY)
        bot_id = int(request.match_info["token"].split(":", 1)[0])
        if method == "sendMessage":
            result: Any = {
                "message_id": next(ids), "date": int(time.time()),
                "chat": {"id": int(params.get("chat_id") or 0), "type": "private"},
                "text": params.get("text"),
            }
        elif method == "getMe":
            result = {"id": bot_id, "is_bot": True, "first_name": "Soak", "username": "SoakBot"}
        elif method == "getWebhookInfo":
            result = {"url": "https://soak.invalid/", "pending_update_count": 0}
        else:
            result = True
        return web.json_response({"ok": True, "result": result})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(received)

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/bot{token}/{method}", call)
    app.router.add_get("/stats", stats)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# -- the driver ------------------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.folder = Path(tempfile.mkdtemp(prefix="loa-soak-"))
        self.prefix = f"loasoak:{os.getpid()}:{random.getrandbits(32):08x}:"
        self.port, self.fake_port = free_port(), free_port()
        self.processes: list[subprocess.Popen[bytes]] = []
        self.ack: list[float] = []
        self.sent_at: dict[str, float] = {}  # text → when its webhook was sent
        self.acked: set[str] = set()
        self.failed = 0
        self.lag: list[float] = []
        self.update_id = 0

    # -- processes ---------------------------------------------------------------------------

    def start(self) -> None:
        bots = self.args.bots
        config = self.folder / "flows.yaml"
        body = FLOWS_HEAD + "".join(DISTRICT.format(n=n) for n in range(bots)) + FLOWS_TAIL
        config.write_text(body, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LOA_", "SOAK_"))}
        env.update(
            LOA_DATA_DIR=str(self.folder / "var"),
            LOA_REDIS_URL=self.args.redis_url,
            LOA_REDIS_PREFIX=self.prefix,
            LOA_TELEGRAM_API=f"http://127.0.0.1:{self.fake_port}",
            LOA_PUBLIC_URL=f"http://127.0.0.1:{self.port}",
        )
        if self.args.database_url:
            env["LOA_DATABASE_URL"] = self.args.database_url
        for n in range(bots):
            env[f"SOAK_TG_TOKEN_{n}"] = token(n)
            env[f"SOAK_TG_SECRET_{n}"] = secret(n)
        log = (self.folder / "fake.log").open("wb")
        self.processes.append(subprocess.Popen(
            [sys.executable, "-m", "bench.soak", "--fake-telegram", str(self.fake_port)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        ))
        log = (self.folder / "serve.log").open("wb")
        prof = str(self.folder / "serve.prof")
        profile = ["-m", "cProfile", "-o", prof] if self.args.profile else []
        self.processes.append(subprocess.Popen(
            [sys.executable, *profile, "-m", "bots.cli", "serve", "--port", str(self.port),
             "--config", str(config), "--processes", str(self.args.processes)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        ))

    async def wait_ready(self, http: Any) -> None:
        deadline = time.monotonic() + 90
        for url in (f"http://127.0.0.1:{self.fake_port}/stats",
                    f"http://127.0.0.1:{self.port}/healthz"):
            while True:
                for process in self.processes:
                    if process.poll() is not None:
                        raise SystemExit(f"a process exited early; see {self.folder}")
                try:
                    async with http.get(url) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"not ready: {url}")
                await asyncio.sleep(0.1)
        # With --processes N, every process must listen before traffic starts: connections
        # opened earlier would all stay (keep-alive) with the first one up.
        import aiohttp

        seen: set[int] = set()
        fresh = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=fresh) as probe:
            while len(seen) < self.args.processes:
                try:
                    async with probe.get(f"http://127.0.0.1:{self.port}/healthz") as response:
                        seen.add(int((await response.json()).get("process", 0)))
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"only processes {sorted(seen)} answered")
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        for process in reversed(self.processes):  # the server first, then the fake it calls
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        import redis

        client = redis.Redis.from_url(self.args.redis_url)
        pattern = self.prefix.replace("*", "\\*") + "*"
        keys = list(client.scan_iter(match=pattern, count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        client.close()

    # -- traffic -----------------------------------------------------------------------------

    def update(self, user: int, text: str) -> tuple[int, bytes]:
        self.update_id += 1
        chat = 100_000_000 + user
        update = {
            "update_id": self.update_id,
            "message": {
                "message_id": self.update_id,
                "from": {"id": chat, "is_bot": False, "first_name": "Soak"},
                "chat": {"id": chat, "type": "private", "first_name": "Soak"},
                "date": int(time.time()),
                "text": text,
            },
        }
        if text == "/start":
            update["message"]["entities"] = [{"type": "bot_command", "offset": 0, "length": 6}]
        return user % self.args.bots, json.dumps(update).encode()

    async def post(self, http: Any, user: int, text: str, measure: bool) -> None:
        bot, body = self.update(user, text)
        url = f"http://127.0.0.1:{self.port}/webhooks/telegram/d{bot:02d}"
        headers = {
            "Content-Type": "application/json",
            "X-Telegram-Bot-Api-Secret-Token": secret(bot),
        }
        began = time.monotonic()
        if measure:
            self.sent_at[text] = time.time()
        for _ in range(5):  # Telegram retries a failed delivery; so do we
            try:
                async with http.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status == 200:
                        if measure:
                            self.ack.append(time.monotonic() - began)
                            self.acked.add(text)
                        return
            except OSError:
                pass
            await asyncio.sleep(0.5)
        self.failed += 1

    async def paced(self, http: Any, messages: list[tuple[int, str]], measure: bool) -> float:
        """Send at the fixed rate (open loop: never waits for acknowledgements)."""
        rate = self.args.rate
        tasks: set[asyncio.Task[None]] = set()
        began = time.monotonic()
        for n, (user, text) in enumerate(messages):
            delay = began + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.ensure_future(self.post(http, user, text, measure))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        sending = time.monotonic() - began
        await asyncio.gather(*tasks)
        return sending

    async def sample_lag(self, http: Any) -> None:
        pattern = re.compile(r"^loa_event_loop_lag_last_seconds (\S+)$", re.M)
        while True:
            await asyncio.sleep(1.0)
            try:
                async with http.get(f"http://127.0.0.1:{self.port}/metrics") as response:
                    found = pattern.search(await response.text())
            except OSError:
                continue
            if found:
                self.lag.append(float(found.group(1)))

    def server_cpu(self) -> float:
        """CPU seconds `loa serve` has used so far (user + system, from /proc): with
        `--processes N`, the supervisor's and its children's."""
        root = self.processes[1].pid
        children = Path(f"/proc/{root}/task/{root}/children")
        pids = [root]
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
        ticks = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    async def replies(self, http: Any) -> list[tuple[float, str, str]]:
        async with http.get(f"http://127.0.0.1:{self.fake_port}/stats") as response:
            data: list[tuple[float, str, str]] = await response.json()
            return data

    async def run(self) -> dict[str, Any]:
        import aiohttp

        args = self.args
        users = args.users
        total = min(args.count, int(args.rate * args.seconds))
        connector = aiohttp.TCPConnector(limit=2000)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=30)
        ) as http:
            await self.wait_ready(http)
            # Warm-up: every user starts the flow (not measured), then the replies drain.
            await self.paced(http, [(u, "/start") for u in range(users)], measure=False)
            deadline = time.monotonic() + args.drain
            while len(await self.replies(http)) < users and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            baseline = len(await self.replies(http))
            # Measured: one text per user in turn (round robin), `total` in all.
            order = [(n % users, f"s{n}") for n in range(total)]
            lag = asyncio.ensure_future(self.sample_lag(http))
            cpu_before, wall_before = self.server_cpu(), time.monotonic()
            sending = await self.paced(http, order, measure=True)
            deadline = time.monotonic() + args.drain
            while time.monotonic() < deadline:
                got = {t for _, _, t in (await self.replies(http))[baseline:]}
                if all(f"Đã nhận: {text}" in got for text in self.acked):
                    break
                await asyncio.sleep(0.5)
            cpu = self.server_cpu() - cpu_before
            wall = time.monotonic() - wall_before
            lag.cancel()
            received = (await self.replies(http))[baseline:]
        answers = Counter(t.removeprefix("Đã nhận: ") for _, _, t in received
                          if t.startswith("Đã nhận: "))
        first: dict[str, float] = {}
        for at, _, text in received:
            if text.startswith("Đã nhận: "):
                first.setdefault(text.removeprefix("Đã nhận: "), at)
        e2e = [first[t] - self.sent_at[t] for t in self.acked if t in first]
        lost = sorted(t for t in self.acked if answers[t] == 0)
        duplicated = sorted(t for t, count in answers.items() if count > 1)
        return {
            "rate_target": args.rate,
            "rate_sent": round(total / sending, 1) if sending else None,
            "messages": total,
            "acknowledged": len(self.acked),
            "not_acknowledged": self.failed,
            "bots": args.bots,
            "users": users,
            "ack_ms": {
                "p50": round(percentile(self.ack, 50) * 1000, 1),
                "p99": round(percentile(self.ack, 99) * 1000, 1),
                "max": round(max(self.ack, default=0) * 1000, 1),
            },
            "reply_ms": {
                "p50": round(percentile(e2e, 50) * 1000, 1),
                "p99": round(percentile(e2e, 99) * 1000, 1),
                "max": round(max(e2e, default=0) * 1000, 1),
            },
            "loop_lag_ms": {
                "p50": round(statistics.median(self.lag) * 1000, 1) if self.lag else None,
                "max": round(max(self.lag) * 1000, 1) if self.lag else None,
                "samples": len(self.lag),
            },
            "server_cpu_ms_per_message": round(cpu / total * 1000, 2) if total else None,
            "server_cpu_busy": round(cpu / wall, 2) if wall else None,
            "load_average": os.getloadavg()[0],
            "lost": len(lost),
            "duplicated": len(duplicated),
            "replies_received": len(received),
            "lost_examples": lost[:5],
            "duplicated_examples": duplicated[:5],
        }


def report(result: dict[str, Any]) -> str:
    ack, e2e, lag = result["ack_ms"], result["reply_ms"], result["loop_lag_ms"]
    return "\n".join([
        f"rate: {result['rate_sent']} msg/s sent (target {result['rate_target']}), "
        f"{result['messages']} messages, {result['bots']} bots, {result['users']} users",
        f"acknowledged: {result['acknowledged']} (not acknowledged: {result['not_acknowledged']})",
        f"ack latency ms: p50 {ack['p50']}  p99 {ack['p99']}  max {ack['max']}",
        f"reply latency ms (webhook sent → reply at the fake): p50 {e2e['p50']}  "
        f"p99 {e2e['p99']}  max {e2e['max']}",
        f"event-loop lag ms (server, 1 s samples): p50 {lag['p50']}  max {lag['max']}",
        f"server CPU: {result['server_cpu_ms_per_message']} ms per message (busy "
        f"{result['server_cpu_busy']} of one core); machine load average "
        f"{result['load_average']:.1f}",
        f"lost: {result['lost']}  duplicated: {result['duplicated']}",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=500.0, help="webhooks per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured duration")
    parser.add_argument("--count", type=int, default=50_000, help="at most this many messages")
    parser.add_argument("--bots", type=int, default=40, help="districts, one Telegram bot each")
    parser.add_argument("--users", type=int, default=3000, help="distinct Telegram users")
    parser.add_argument("--drain", type=float, default=60.0, help="seconds to wait for replies")
    parser.add_argument("--redis-url", default=os.environ.get("LOA_REDIS_URL")
                        or "redis://127.0.0.1:6379/0")
    parser.add_argument("--database-url", default=None, help="records (default: SQLite)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--profile", action="store_true", help="cProfile loa serve (serve.prof)")
    parser.add_argument(
        "--processes", type=int, default=1, help="loa serve --processes (one port, SO_REUSEPORT)"
    )
    parser.add_argument("--fake-telegram", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fake_telegram is not None:
        run_fake(args.fake_telegram)
        return 0
    soak = Soak(args)
    soak.start()
    try:
        result = asyncio.run(soak.run())
    finally:
        soak.stop()
    result["logs"] = str(soak.folder)
    print(json.dumps(result, ensure_ascii=False) if args.json else report(result))
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
