"""Loa on the peers' reference conversation: `uv run python -m bench.engine --users 2000 --json`.

The same traffic, harness and reply checks as aiogram and python-telegram-bot in
`../shared/bench` (SCENARIO.md), run through the code production runs:

    raw Bot-API update dict
      → adapters.telegram.parse_update                         (no aiogram, no pydantic)
      → bots.pipeline.Pipeline.process: accept (de-dup) → claim (lock) → engine → records
        → commit (compare-and-set session, outbox) → outbox → TelegramAdapter.send
      → adapters.telegram.render → the exact sendMessage JSON body (orjson)
      → a fake Bot API transport: reads the request, ReplyCounter.record(...), answers a canned
        {"ok": true, "result": <Message>} JSON reply that the adapter parses.

Configurations: loa-memory (in-process store), loa-sqlite (embedded SQLite store in a temporary
directory, with the SQL records), loa-redis (Redis store: lock, de-dup, compare-and-set; unique
key prefix removed afterwards). Each configuration runs in a fresh process (peak RSS is per
configuration) unless exactly one is asked for with --runs 1.

Extra modes for finding where the time goes: --layers (µs per update spent in each layer) and
--profile N (cProfile of the timed region, top N functions).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import importlib.util
import inspect
import io
import json
import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
FLOWS = Path(__file__).resolve().parent / "flows.yaml"
DISTRICT = "bench"
CONFIGS = ("loa-memory", "loa-sqlite", "loa-redis")
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
BOT_ME = {"id": 123456789, "is_bot": True, "first_name": "Bench", "username": "bench_bot"}


# ---------------------------------------------------------------------------------------------
# the peers' benchmark (scenario + harness), imported from ../shared/bench
# ---------------------------------------------------------------------------------------------


def peer_bench_dir() -> Path:
    """Where the peers' scenario.py and harness.py live: $LOA_PEER_BENCH, else the shared
    folder next to the repository."""
    env = os.environ.get("LOA_PEER_BENCH")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "bench"
    if not (path / "scenario.py").is_file() or not (path / "harness.py").is_file():
        raise FileNotFoundError(
            f"peer benchmark not found at {path} (set LOA_PEER_BENCH to the folder holding "
            "scenario.py and harness.py)"
        )
    return path.resolve()


def import_peer() -> tuple[ModuleType, ModuleType]:
    """(scenario, harness) of the peer benchmark. Loaded from their files under their own
    names without touching sys.path: the peers' folder also holds a `bench.py` that would
    shadow this package."""
    folder = peer_bench_dir()
    modules = []
    for name in ("scenario", "harness"):  # harness does `from scenario import ...`
        module = sys.modules.get(name)
        if module is None or Path(getattr(module, "__file__", "")).resolve().parent != folder:
            spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
            if spec is None or spec.loader is None:
                raise FileNotFoundError(folder / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        modules.append(module)
    return modules[0], modules[1]


# ---------------------------------------------------------------------------------------------
# the fake Bot API
# ---------------------------------------------------------------------------------------------


class FakeBotApi:
    """The Telegram server without the network: reads the request body the adapter serialised,
    counts the reply, answers the canned JSON a real sendMessage returns (as bytes, parsed
    back, exactly what an HTTP client's `await response.json()` would hand the adapter)."""

    def __init__(self, counter: Any) -> None:
        self.counter = counter
        self.message_id = 0

    async def __call__(self, method: str, body: bytes) -> dict[str, Any]:
        request = orjson.loads(body)
        chat_id = request["chat_id"]
        text = request.get("text", request.get("caption", ""))
        self.counter.record(method, chat_id, text)
        self.message_id += 1
        result = {
            "message_id": self.message_id,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private"},
            "from": BOT_ME,
            "text": text,
        }
        reply: dict[str, Any] = orjson.loads(orjson.dumps({"ok": True, "result": result}))
        return reply


class CostOnlyLimiter:
    """The production rate limiter (per bot and per chat, bots.ratelimit), consulted for its
    cost on every send (Redis: one more script call), its answer ignored. The fake Bot API has
    no limits, the peers do not limit, and Telegram's 30 messages/s per bot would otherwise
    turn a throughput benchmark into a measurement of that limit."""

    def __init__(self, limiter: Any) -> None:
        self.limiter = limiter

    async def reserve(self, group: str, buckets: Any, max_wait: float) -> Any:
        from bots.ratelimit import Grant

        await self.limiter.reserve(group, buckets, max_wait)
        return Grant(True, 0.0)


# ---------------------------------------------------------------------------------------------
# wiring: engine, store, records, pipeline
# ---------------------------------------------------------------------------------------------


def build_engine() -> tuple[Any, Any, Any]:
    """(engine, session codec, compiled bundle) for bench/flows.yaml, loaded, checked and
    compiled exactly as `loa serve` does it (bots.runtime.load_flows)."""
    from bots.runtime import FlowsInvalid, load_flows
    from flows import session as session_codec
    from flows.engine import Engine

    try:
        flows = load_flows(FLOWS)
    except FlowsInvalid as error:
        raise SystemExit(f"bench/flows.yaml does not pass check:\n{error}") from error
    return Engine(flows.compiled), session_codec, flows.compiled


@dataclass
class Wiring:
    config: str
    store: Any
    records: Any = None
    redis: Any = None  # the store's Redis client (loa-redis)
    prefix: str = ""
    tmp: Path | None = None
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        for cleanup in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                await cleanup()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


def records_wanted(config: str, records: str) -> bool:
    if records == "auto":
        return config == "loa-sqlite"
    return records == "on"


async def open_wiring(config: str, compiled: Any, records: str = "auto") -> Wiring:
    from bots.state import open_store

    if config == "loa-memory":
        wiring = Wiring(config, await open_store(memory=True))
    elif config == "loa-sqlite":
        tmp = Path(tempfile.mkdtemp(prefix="loa-bench-"))
        wiring = Wiring(config, await open_store(data_dir=tmp), tmp=tmp)
    elif config == "loa-redis":
        url = os.environ.get("LOA_REDIS_URL") or DEFAULT_REDIS
        prefix = f"loabench:{os.getpid()}:{uuid.uuid4().hex[:8]}:"
        from bots.state.redis import RedisStore

        store = await RedisStore.connect(url, prefix=prefix)
        wiring = Wiring(config, store, redis=store.client, prefix=prefix)

        async def drop_keys() -> None:
            await delete_prefix(store.client, prefix)

        wiring.cleanups.append(drop_keys)
    else:
        raise SystemExit(f"unknown configuration {config!r}; one of {', '.join(CONFIGS)}")
    wiring.cleanups.append(wiring.store.close)
    if records_wanted(config, records):
        if wiring.tmp is None:
            wiring.tmp = Path(tempfile.mkdtemp(prefix="loa-bench-"))
        wiring.records, db = await open_records(wiring.tmp, compiled)
        wiring.cleanups.append(db.close)
    return wiring


async def open_records(folder: Path, compiled: Any) -> tuple[Any, Any]:
    """The SQL records the pipeline writes in production (bots.runtime.SqlRecords over a
    migrated SQLite file in `folder`): (records, database)."""
    from bots.records import FileStore, Records, open_database
    from bots.runtime import SqlRecords

    db = await open_database(f"sqlite+aiosqlite:///{folder / 'records.sqlite3'}")
    records = Records(db.sessions, FileStore(folder / "files"), reads=db.reads)
    return SqlRecords(records, lambda: compiled), db


async def delete_prefix(client: Any, prefix: str) -> int:
    n = 0
    batch: list[bytes] = []
    async for key in client.scan_iter(match=prefix.replace("*", "\\*") + "*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            n += await client.delete(*batch)
            batch.clear()
    if batch:
        n += await client.delete(*batch)
    return n


# ---------------------------------------------------------------------------------------------
# layer timing (--layers)
# ---------------------------------------------------------------------------------------------


class Layers:
    """Wall time spent inside each layer's calls (ns), for a per-layer µs/update table."""

    def __init__(self) -> None:
        self.ns: dict[str, int] = {}
        self.calls: dict[str, int] = {}

    def reset(self) -> None:
        for name in self.ns:
            self.ns[name] = 0
            self.calls[name] = 0

    def sync(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        self.ns.setdefault(name, 0)
        self.calls.setdefault(name, 0)
        pc = time.perf_counter_ns
        ns, calls = self.ns, self.calls

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = pc()
            try:
                return fn(*args, **kwargs)
            finally:
                ns[name] += pc() - t0
                calls[name] += 1

        return timed

    def coro(self, name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        self.ns.setdefault(name, 0)
        self.calls.setdefault(name, 0)
        pc = time.perf_counter_ns
        ns, calls = self.ns, self.calls

        async def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = pc()
            try:
                return await fn(*args, **kwargs)
            finally:
                ns[name] += pc() - t0
                calls[name] += 1

        return timed

    def table(self, updates: int, total_us: float) -> dict[str, Any]:
        rows = {
            name: {
                "us_per_update": round(self.ns[name] / updates / 1e3, 2),
                "calls_per_update": round(self.calls[name] / updates, 2),
            }
            for name in self.ns
        }
        return {"total_us_per_update": round(total_us, 2), "layers": rows}


class _Proxy:
    """Forwards attribute access; lets --layers time methods of objects with __slots__."""

    def __init__(self, target: Any, **overrides: Any) -> None:
        self._target = target
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


def instrument(layers: Layers, engine: Any, codec: Any, wiring: Wiring) -> tuple[Any, Any]:
    import bots.pipeline as pipeline_module

    for name in ("encode_inbound", "decode_inbound", "encode_outbound", "decode_outbound"):
        fn = getattr(pipeline_module, name, None)
        if fn is not None:
            setattr(pipeline_module, name, layers.sync(f"codec.{name}", fn))
    engine = _Proxy(engine, handle=layers.sync("engine.handle", engine.handle))
    codec = _Proxy(
        codec,
        dumps=layers.sync("session.dumps", codec.dumps),
        loads=layers.sync("session.loads", codec.loads),
    )
    store = wiring.store
    overrides = {
        name: layers.coro(f"store.{name}", getattr(store, name))
        for name in dir(store)
        if not name.startswith("_")
        and name != "close"
        and inspect.iscoroutinefunction(getattr(store, name, None))
    }
    wiring.store = _Proxy(store, **overrides)
    if wiring.records is not None:
        records = wiring.records
        wiring.records = _Proxy(
            records,
            **{
                name: layers.coro(f"records.{name}", getattr(records, name))
                for name in dir(records)
                if not name.startswith("_")
                and inspect.iscoroutinefunction(getattr(records, name, None))
            },
        )
    return engine, codec


# ---------------------------------------------------------------------------------------------
# one configuration
# ---------------------------------------------------------------------------------------------


async def run_config(
    config: str,
    users: int,
    concurrency: int = 1,
    *,
    warmup: int = 20,
    records: str = "auto",
    layers: bool = False,
    profile: int = 0,
    memory_users: int | None = None,
    rate_limits: str = "cost",
) -> tuple[dict[str, Any], Any]:
    """Run one configuration; returns (the harness RESULT dict plus Loa's fields, counter).
    Raises AssertionError if the replies are not exactly what the scenario requires."""
    from adapters.telegram import TelegramAdapter, parse_update
    from bots.pipeline import Pipeline
    from flows.vocab import Channel

    scenario, harness = import_peer()
    counter = scenario.ReplyCounter()
    engine, codec, compiled = build_engine()
    wiring = await open_wiring(config, compiled, records)
    try:
        timer = Layers() if layers else None
        transport: Callable[[str, bytes], Awaitable[dict[str, Any]]] = FakeBotApi(counter)
        # the pipeline's own choice for this store (Redis: shared outboxes, read before send),
        # taken before --layers wraps the store in a proxy that would hide its type
        exclusive = Pipeline(wiring.store, engine, codec).exclusive
        limiter: Any = None
        if rate_limits == "cost":
            from bots.ratelimit import limiter_for

            limiter = CostOnlyLimiter(limiter_for(wiring.store))
        elif rate_limits == "off":
            limiter = CostOnlyLimiter(None)
            limiter.limiter = _NoLimiter()
        if timer is not None:
            engine, codec = instrument(timer, engine, codec, wiring)
            if limiter is not None:
                limiter.reserve = timer.coro("limiter.reserve", limiter.reserve)
            transport = timer.coro("transport (fake Bot API)", transport)
        adapter = TelegramAdapter(DISTRICT, transport=transport)
        if timer is not None:
            adapter.send = timer.coro("adapter.send (render+json+transport)", adapter.send)  # type: ignore[method-assign]
        pipeline = Pipeline(
            wiring.store,
            engine,
            codec,
            records=wiring.records,
            adapters={Channel.TELEGRAM: _by_district(adapter)},
            exclusive=exclusive,
            limiter=limiter,
            metrics=_metrics(),
        )
        parse = parse_update if timer is None else timer.sync("parse_update", parse_update)
        process = pipeline.process
        district = DISTRICT

        async def feed(raw: dict[str, Any]) -> None:
            for inbound in parse(raw, district):
                await process(inbound)

        profiler = cProfile.Profile() if profile else None
        cmd_counter: dict[str, int] = {}

        cpu = [0.0]

        async def before() -> None:
            cpu[0] = time.process_time()
            if timer is not None:
                timer.reset()
            if wiring.redis is not None:
                _count_commands(wiring.redis, cmd_counter)
            if profiler is not None:
                profiler.enable()

        async def after() -> float:
            cpu[0] = time.process_time() - cpu[0]
            if profiler is not None:
                profiler.disable()
            return 0.0

        extra = {
            "framework": "loa",
            "store": config.removeprefix("loa-"),
            "records": wiring.records is not None,
            "exclusive_outbox": exclusive,
            "rate_limits": rate_limits,
        }
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink):  # the harness prints its own RESULT line
            result: dict[str, Any] = await harness.run_benchmark(
                config,
                feed,
                users,
                concurrency,
                warmup_users=warmup,
                before_timed=before,
                after_timed=after,
                extra=extra,
            )
        counter.check(users + warmup)
        updates = result["updates"]
        # CPU time of this process (all its threads) per update: unlike wall time it does not
        # grow when other processes take the CPU away, so it compares runs on a busy machine
        result["cpu_us_per_update"] = round(cpu[0] / updates * 1e6, 2)
        if cmd_counter:
            total = sum(cmd_counter.values())
            result["redis_cmds_per_update"] = round(total / updates, 3)
            result["redis_cmds"] = dict(cmd_counter)
            _count_commands(wiring.redis, None)
        if timer is not None:
            result["layers"] = timer.table(updates, result["us_per_update"])
        if profiler is not None:
            result["profile"] = _profile_text(profiler, profile)
        if wiring.redis is not None:
            result.update(
                await redis_memory(
                    wiring, scenario, feed, memory_users or users, first_user=users + warmup
                )
            )
        return result, counter
    finally:
        await wiring.close()


def _by_district(adapter: Any) -> Any:
    """Production routes Telegram sends through `bots.channels.ByDistrict` (one bot per
    district); the benchmark does the same when that module is there."""
    try:
        from bots.channels import ByDistrict
    except ImportError:
        return adapter
    from flows.vocab import Channel

    return ByDistrict(Channel.TELEGRAM, {DISTRICT: adapter})


class _NoLimiter:
    async def reserve(self, group: str, buckets: Any, max_wait: float) -> None:
        return None


def _metrics() -> Any:
    """The /metrics counters production counts into (bots.ops.metrics), if present."""
    try:
        from bots.ops.metrics import Metrics
    except ImportError:
        return None
    return Metrics()


def _count_commands(client: Any, into: dict[str, int] | None) -> None:
    """Count every command the store's client sends (None: stop counting)."""
    original = client.__dict__.pop("_loa_original_execute", None)
    if original is not None:
        client.execute_command = original
    if into is None:
        return
    original = client.execute_command
    client.__dict__["_loa_original_execute"] = original

    async def execute_command(*args: Any, **options: Any) -> Any:
        name = str(args[0]).lower()
        into[name] = into.get(name, 0) + 1
        return await original(*args, **options)

    client.execute_command = execute_command


def _profile_text(profiler: cProfile.Profile, top: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    out.write(_by_module(stats, top))
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def _module_of(filename: str) -> str:
    """Group a profiled function by where it lives: a repo file, an installed package, the
    standard library module, or a builtin."""
    if filename == "~":
        return "(builtins: C functions)"
    path = Path(filename)
    parts = path.parts
    if "site-packages" in parts:
        return "pkg:" + parts[parts.index("site-packages") + 1]
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(REPO))
    if path.parent.name == "bench" and path.name in ("harness.py", "scenario.py"):
        return "peer-bench:" + path.name
    return "stdlib:" + path.name


def _by_module(stats: pstats.Stats, top: int) -> str:
    """Own time (tottime) summed per file/package: where the time goes, layer by layer."""
    totals: dict[str, float] = {}
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in raw.items():
        group = _module_of(filename)
        totals[group] = totals.get(group, 0.0) + tottime
    grand = sum(totals.values()) or 1.0
    lines = ["own time by module (cProfile, timed region):"]
    for group, seconds in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {seconds / grand * 100:5.1f}%  {seconds:7.3f} s  {group}")
    return "\n".join(lines) + "\n\n"


async def redis_memory(
    wiring: Wiring, scenario: Any, feed: Callable[[dict[str, Any]], Awaitable[None]],
    n: int, first_user: int,
) -> dict[str, Any]:
    """Redis memory per conversation: `n` new conversations stopped half-way (4 of 8 updates),
    MEMORY USAGE summed over every key under the run's prefix that belongs to one of them (the
    conversation value with session, lock and de-dup window; inbox and outbox lists while they
    exist; anything else keyed by the person, such as a per-chat rate-limit bucket, which
    expires seconds after the last reply); and the same for the conversations the timed run
    finished. Shared keys (the bot's own rate-limit bucket) belong to no conversation."""
    half = scenario.STEPS_PER_USER // 2
    update_id = 50_000_000
    for step in range(half):
        for k in range(n):
            update_id += 1
            await feed(scenario.raw_update(update_id, first_user + k, step))

    client, prefix = wiring.redis, wiring.prefix
    base = scenario.BASE_USER_ID
    half_ids = {str(base + i) for i in range(first_user, first_user + n)}
    done_n = min(n, first_user)
    done_ids = {str(base + i) for i in range(done_n)}
    sizes: dict[str, dict[str, int]] = {"half": {}, "done": {}}
    counts = {"half": 0, "done": 0}
    glob = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in prefix) + "*"
    async for raw in client.scan_iter(match=glob, count=1000):
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        rest = name[len(prefix):]
        ids = set(re.findall(r"\d{9,}", rest))
        group = "half" if ids & half_ids else "done" if ids & done_ids else None
        if group is None:
            continue
        size = await client.memory_usage(raw, samples=0) or 0
        kind = rest.split(":", 1)[0]
        sizes[group][kind] = sizes[group].get(kind, 0) + size
        counts[group] += 1

    def per(group: str, people: int) -> tuple[float, float, dict[str, float]]:
        people = max(1, people)
        total = sum(sizes[group].values())
        kinds = {k: round(v / people, 1) for k, v in sorted(sizes[group].items())}
        return round(total / people, 1), round(counts[group] / people, 2), kinds

    half_bytes, half_keys, half_kinds = per("half", n)
    done_bytes, done_keys, done_kinds = per("done", done_n)
    return {
        "redis_bytes_per_conversation_half_way": half_bytes,
        "redis_keys_per_conversation_half_way": half_keys,
        "redis_bytes_by_key_half_way": half_kinds,
        "redis_half_way_conversations": n,
        "redis_bytes_per_conversation_finished": done_bytes,
        "redis_keys_per_conversation_finished": done_keys,
        "redis_bytes_by_key_finished": done_kinds,
    }


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------

SUMMARY_FIELDS = (
    "config",
    "concurrency",
    "updates_per_s",
    "us_per_update",
    "cpu_us_per_update",
    "lat_p50_us",
    "lat_p99_us",
    "peak_rss_mb",
    "redis_cmds_per_update",
    "redis_bytes_per_conversation_half_way",
)
MEDIAN_FIELDS = ("updates_per_s", "us_per_update", "cpu_us_per_update", "lat_p50_us",
                 "lat_p99_us", "peak_rss_mb", "rss_before_mb", "redis_cmds_per_update",
                 "gc_gen2_during_run",
                 "redis_bytes_per_conversation_half_way", "redis_bytes_per_conversation_finished")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--concurrency", default="1", help="comma-separated, e.g. 1,32")
    ap.add_argument("--warmup-users", type=int, default=20)
    ap.add_argument("--config", default=",".join(CONFIGS),
                    help="comma-separated: " + ", ".join(CONFIGS))
    ap.add_argument("--runs", type=int, default=1, help="runs per configuration (median)")
    ap.add_argument("--records", choices=("auto", "on", "off"), default="auto",
                    help="write the SQL records (auto: only loa-sqlite)")
    ap.add_argument("--rate-limits", choices=("cost", "off"), default="cost",
                    help="cost: consult the production send rate limiter and ignore its "
                         "answer (default); off: skip it")
    ap.add_argument("--json", action="store_true", help="one JSON object per line, nothing else")
    ap.add_argument("--layers", action="store_true", help="time each layer (adds overhead)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="cProfile the timed region, print the top N functions to stderr")
    ap.add_argument("--memory-users", type=int, default=None,
                    help="conversations stopped half-way for the Redis memory figure "
                         "(default: --users)")
    ap.add_argument("--in-process", action="store_true",
                    help="run every configuration in this process (no fresh process each)")
    ap.add_argument("--compare", nargs="?", const="all", default=None, metavar="PEERS",
                    help="also run the peers (all, or comma-separated label substrings), "
                         "interleaved run by run with Loa, each in a fresh process; needs the "
                         "peers' venv (../shared/bench/run.sh creates it)")
    ap.add_argument("--markdown", default=None, metavar="FILE",
                    help="also write the results as a Markdown table to FILE")
    return ap.parse_args(argv)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _run_child(args: argparse.Namespace, config: str, concurrency: int) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.engine", "--in-process", "--json", "--config", config,
            "--users", str(args.users), "--concurrency", str(concurrency),
            "--warmup-users", str(args.warmup_users), "--records", args.records,
            "--rate-limits", args.rate_limits]
    if args.memory_users is not None:
        argv += ["--memory-users", str(args.memory_users)]
    if args.layers:
        argv.append("--layers")
    proc = subprocess.run(argv, cwd=REPO, env=_child_env(), capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{config} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# -- the peers, run from their own folder with their own virtualenv --------------------------


def peer_python(folder: Path) -> Path:
    for candidate in (os.environ.get("LOA_PEER_PYTHON"), folder / ".venv" / "bin" / "python",
                      "/tmp/loa-peers-venv/bin/python"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise SystemExit(f"the peers' virtualenv is missing: run {folder / 'run.sh'} once "
                     "(or set LOA_PEER_PYTHON)")


def peer_configs(folder: Path, wanted: str) -> list[tuple[str, list[str]]]:
    """(label, script argv) of the peers' configurations, from their bench.py."""
    spec = importlib.util.spec_from_file_location("loa_peer_bench_runner", folder / "bench.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"{folder / 'bench.py'} not found")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    picked = []
    for label, argv, _needs_redis in runner.PEERS:
        if wanted == "all" or any(w and w in label for w in wanted.split(",")):
            picked.append((label, list(argv)))
    return picked


def _run_peer(folder: Path, python: Path, argv: list[str], args: argparse.Namespace,
              concurrency: int) -> dict[str, Any]:
    env = dict(os.environ)
    env.setdefault("BENCH_REDIS_URL", os.environ.get("LOA_REDIS_URL") or DEFAULT_REDIS)
    proc = subprocess.run(
        [str(python), *argv, "--users", str(args.users), "--concurrency", str(concurrency),
         "--warmup-users", str(args.warmup_users)],
        cwd=folder, env=env, capture_output=True, text=True, timeout=1800,
    )
    if proc.returncode != 0:
        raise SystemExit(f"peer {argv} failed (exit {proc.returncode}):\n{proc.stdout}\n"
                         f"{proc.stderr}")
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[7:])
            return result
    raise SystemExit(f"peer {argv} printed no RESULT line:\n{proc.stdout}\n{proc.stderr}")


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(runs[-1])
    if len(runs) == 1:
        return out
    for name in MEDIAN_FIELDS:
        values = [r[name] for r in runs if isinstance(r.get(name), int | float)]
        if values:
            out[name] = round(statistics.median(values), 3)
    out["runs"] = len(runs)
    out["spread_updates_per_s"] = [r["updates_per_s"] for r in runs]
    out.pop("layers", None)
    return out


def _emit(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, ensure_ascii=False), flush=True)
        return
    shown = {k: result[k] for k in SUMMARY_FIELDS if k in result}
    print("  ".join(f"{k}={v}" for k, v in shown.items()), flush=True)
    if "layers" in result:
        layers = result["layers"]
        print(f"    per-layer µs/update (total {layers['total_us_per_update']}):")
        for name, row in sorted(layers["layers"].items(), key=lambda kv: -kv[1]["us_per_update"]):
            if row["calls_per_update"]:
                print(f"      {name:42s} {row['us_per_update']:8.2f} µs  "
                      f"{row['calls_per_update']:5.2f} calls")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    def num(value: Any, digits: int = 0) -> str:
        if not isinstance(value, int | float):
            return "–"
        return f"{value:,.{digits}f}"

    lines = [
        "| config | conc | updates/s | µs/update | p50 µs | p99 µs | peak RSS MB "
        "| Redis cmds/update | runs (updates/s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        spread = ", ".join(f"{v:,.0f}" for v in r.get("spread_updates_per_s", [r["updates_per_s"]]))
        lines.append(
            f"| {r['config']} | {r.get('concurrency', 1)} | {num(r['updates_per_s'])} "
            f"| {num(r['us_per_update'], 1)} | {num(r['lat_p50_us'], 1)} "
            f"| {num(r['lat_p99_us'], 1)} | {num(r['peak_rss_mb'], 1)} "
            f"| {num(r.get('redis_cmds_per_update'), 2)} | {spread} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configs = [c.strip() for c in args.config.split(",") if c.strip()]
    concurrencies = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    for config in configs:
        if config not in CONFIGS:
            print(f"unknown configuration {config!r}; one of {', '.join(CONFIGS)}",
                  file=sys.stderr)
            return 2
    in_process = args.in_process or bool(args.profile) or (
        len(configs) == 1 and args.runs == 1 and len(concurrencies) == 1 and not args.compare
    )
    peers: list[tuple[str, list[str]]] = []
    folder = python = None
    if args.compare:
        folder = peer_bench_dir()
        python = peer_python(folder)
        peers = peer_configs(folder, args.compare)

    rows: list[dict[str, Any]] = []
    for concurrency in concurrencies:
        results: dict[str, list[dict[str, Any]]] = {}
        # run by run, every configuration once per round: host noise hits all of them alike
        for _ in range(args.runs):
            if folder is not None and python is not None:
                for label, peer_argv in peers:
                    result = _run_peer(folder, python, peer_argv, args, concurrency)
                    result["config"] = label
                    results.setdefault(label, []).append(result)
                    if not args.json:
                        print(f"  {label:30s} c={concurrency:<3d} "
                              f"{result['updates_per_s']:9,.0f} updates/s", flush=True)
            for config in configs:
                if in_process:
                    result, _ = asyncio.run(
                        run_config(config, args.users, concurrency, warmup=args.warmup_users,
                                   records=args.records, layers=args.layers,
                                   profile=args.profile, memory_users=args.memory_users,
                                   rate_limits=args.rate_limits)
                    )
                    profile_text = result.pop("profile", None)
                    if profile_text:
                        print(profile_text, file=sys.stderr)
                else:
                    result = _run_child(args, config, concurrency)
                results.setdefault(config, []).append(result)
                if not args.json and (args.runs > 1 or peers):
                    print(f"  {config:30s} c={concurrency:<3d} "
                          f"{result['updates_per_s']:9,.0f} updates/s", flush=True)
        for runs in results.values():
            row = _median(runs) if len(runs) > 1 else runs[0]
            rows.append(row)
            _emit(row, args.json)
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(rows), encoding="utf-8")
    elif not args.json and len(rows) > 1:
        print()
        print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
