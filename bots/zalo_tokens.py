"""Zalo OA token keeper: one shared token pair per OA, refreshed by one process at a time.

Zalo's access token lives 25 hours and its refresh token is **single-use**: every refresh
returns a new pair and spends the old refresh token (channels.md §2.5). With several processes
(or several tasks) sharing an OA, two refreshes with the same refresh token would leave one of
them refused and the OA needing a human. So (docs/zalo-tokens.md):

- The pair lives in the records database (`zalo_tokens`), never in memory or the environment.
- A refresh runs under a **lease row**: an atomic conditional UPDATE sets `lease_owner` and
  `lease_until` when the lease is free or expired, in a short transaction. No transaction is
  open while Zalo is called. Whoever does not get the lease polls (small backoff, bounded) until
  the holder is done and uses what it saved.
- After taking the lease the pair is **read again**: if someone refreshed meanwhile, that pair
  is used and Zalo is not called.
- The new pair is **saved before it is used or the lease released**, and only over the refresh
  token that was spent (compare-and-set). The HTTP call and the save run shielded from the
  caller's cancellation, so a cancelled sender never throws away a rotated pair.
- Refresh is proactive (`access_token` and `proactive_refresh` refresh a pair that expires
  within `refresh_margin`), and reactive (`invalidated`, on Zalo's -216/-220): re-read, and
  refresh only if the stored access token is still the one that failed.
- A refused refresh marks the OA as needing re-authorisation (a flag on the row, an
  organiser notification, an ERROR log in Vietnamese) and Zalo is not asked again with that
  refresh token; `store_initial` (the OAuth callback) clears it. Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.base import AdapterError, AuthExpired, RetryLater
from adapters.zalo import TokenPair, TokenRefused, refresh_tokens
from bots.records.db import Database
from bots.records.models import (
    AuditEntry,
    NotificationKind,
    OrganiserNotification,
    ZaloTokenPair,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

BOT = "bot"
START_PATH = "/oauth/zalo/start"
# Margins this wide would rotate the pair on almost every message (Zalo gives 25 hours).
MAX_MARGIN = timedelta(hours=12)
SAVE_ATTEMPTS = 5  # tries to store a rotated pair (0.1 + 0.2 + 0.4 + 0.8 s between them)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ZaloNotAuthorised(AuthExpired):
    """The OA has no usable token pair: never authorised, or Zalo refused the refresh token.
    An OA admin must open the authorisation link again. It is an `AuthExpired`, so the outbox
    keeps the message pending instead of dropping it."""

    def __init__(self, oa_id: str, message: str) -> None:
        super().__init__(message)
        self.oa_id = oa_id


class RefreshOutcome(enum.Enum):
    FRESH = "fresh"  # nothing to do, or another process refreshed it meanwhile
    REFRESHED = "refreshed"  # this call rotated the pair
    FAILED = "failed"  # Zalo or the database could not be reached; tried again next time
    NOT_AUTHORISED = "not_authorised"  # no pair, or an OA admin must authorise again


@dataclass(frozen=True, slots=True)
class TokenStatus:
    """What an organiser or operator may see about an OA's tokens (never the tokens)."""

    oa_id: str
    access_expires_at: datetime
    generation: int
    authorised_at: datetime
    rotated_at: datetime
    needs_reauthorisation: bool
    problem: str | None
    lease_owner: str | None
    lease_until: datetime | None


@dataclass(frozen=True, slots=True)
class _Pair:
    """A snapshot of a row, detached from any session."""

    access_token: str
    refresh_token: str
    access_expires_at: datetime
    needs_reauthorisation: bool
    problem: str | None


def _snapshot(row: ZaloTokenPair) -> _Pair:
    return _Pair(
        row.access_token,
        row.refresh_token,
        row.access_expires_at,
        row.needs_reauthorisation,
        row.problem,
    )


class ZaloTokenKeeper:
    """`adapters.zalo.TokenProvider` over the records database, safe across processes.

    `database` is the records `Database` (SQLite or PostgreSQL); `session` the aiohttp session
    used to call Zalo's OAuth server at `oauth_base` (`LOA_ZALO_OAUTH`) with the app's id and
    secret key. `districts` maps OA ids to district slugs (where the re-authorisation notice
    goes); `start_url` is the link an OA admin opens to authorise again."""

    def __init__(
        self,
        database: Database,
        session: aiohttp.ClientSession,
        oauth_base: str,
        app_id: str,
        secret_key: str,
        *,
        clock: Clock = _utcnow,
        refresh_margin: timedelta = timedelta(hours=1),
        lease: timedelta = timedelta(seconds=30),
        wait: timedelta | None = None,
        retry_pause: timedelta = timedelta(seconds=30),
        districts: Mapping[str, str] | None = None,
        start_url: str = START_PATH,
    ) -> None:
        if lease <= timedelta(0):
            raise ValueError("lease must be positive")
        if not timedelta(0) <= refresh_margin <= MAX_MARGIN:
            raise ValueError(f"refresh_margin must be between 0 and {MAX_MARGIN}")
        self._db = database
        self._http = session
        self._oauth = oauth_base
        self._app_id = app_id
        self._secret = secret_key
        self._clock = clock
        self.refresh_margin = refresh_margin
        self.lease = lease
        # The HTTP call must end well inside the lease, so that a live holder never loses it.
        self.http_timeout = min(10.0, lease.total_seconds() / 2)
        self.wait = wait if wait is not None else lease * 2
        self._retry_pause = retry_pause.total_seconds()
        self._districts = dict(districts or {})
        self.start_url = start_url
        self._locks: dict[str, asyncio.Lock] = {}
        self._paused_until: dict[str, float] = {}
        self._work: set[asyncio.Future[tuple[str, bool]]] = set()
        self._owner_prefix = f"{socket.gethostname()}:{os.getpid()}"

    # -- TokenProvider ----------------------------------------------------------------------

    async def access_token(self, oa_id: str) -> str:
        """The OA's access token, refreshed first when it expires within the margin.

        Raises `ZaloNotAuthorised` when an OA admin must authorise (again), `RetryLater` when
        the token has expired and cannot be refreshed right now. A token that still lives is
        returned when its early refresh fails for a passing reason (tried again later)."""
        try:
            pair = self._usable(oa_id, await self._read(oa_id))
            now = self._clock()
            if not self._due(pair, None, now):
                return pair.access_token
            if pair.access_expires_at > now and self._paused(oa_id):
                return pair.access_token
            try:
                token, _ = await self._refresh(oa_id, None)
                return token
            except ZaloNotAuthorised:
                raise
            except (AdapterError, SQLAlchemyError) as error:
                if pair.access_expires_at <= self._clock():
                    raise
                self._pause(oa_id)
                log.warning(
                    "zalo: OA %s: early token refresh failed (%s); the current token still "
                    "lives until %s",
                    oa_id,
                    _reason(error),
                    pair.access_expires_at.isoformat(),
                )
                return pair.access_token
        except SQLAlchemyError as error:
            raise RetryLater(
                f"Không đọc được token của Zalo OA {oa_id} trong cơ sở dữ liệu "
                f"({type(error).__name__})."
            ) from None

    async def invalidated(self, oa_id: str, token: str) -> None:
        """Zalo refused `token` (-216/-220): refresh, unless the stored access token is no
        longer `token` (someone refreshed already). Never raises: the adapter reports the
        delivery as `AuthExpired` and the message is retried with whatever is stored then."""
        try:
            await self._refresh(oa_id, token)
        except ZaloNotAuthorised as error:
            log.warning("zalo: OA %s: %s", oa_id, error)
        except (AdapterError, SQLAlchemyError) as error:
            log.warning(
                "zalo: OA %s: refresh after a refused token failed (%s)", oa_id, _reason(error)
            )

    # -- the OAuth callback and the periodic task -------------------------------------------

    async def store_initial(self, oa_id: str, pair: TokenPair) -> None:
        """Save the pair an OA admin's consent produced (`exchange_code` in the OAuth
        callback). Replaces whatever was stored, clears the re-authorisation flag and marks
        the open re-authorisation notices of the OA's district handled."""
        for attempt in (1, 2):
            now = self._clock()
            try:
                async with self._db.sessions() as session, session.begin():
                    row = await _locked_row(session, oa_id)
                    expires = now + timedelta(seconds=pair.expires_in)
                    if row is None:
                        row = ZaloTokenPair(
                            oa_id=oa_id,
                            access_token=pair.access_token,
                            refresh_token=pair.refresh_token,
                            access_expires_at=expires,
                            generation=1,
                            authorised_at=now,
                            rotated_at=now,
                            needs_reauthorisation=False,
                        )
                        session.add(row)
                    else:
                        row.access_token = pair.access_token
                        row.refresh_token = pair.refresh_token
                        row.access_expires_at = expires
                        row.generation += 1
                        row.authorised_at = row.rotated_at = now
                        row.needs_reauthorisation = False
                        row.problem = None
                    await session.execute(
                        update(OrganiserNotification)
                        .where(
                            OrganiserNotification.district == self._district(oa_id),
                            OrganiserNotification.kind == NotificationKind.REAUTHORISE,
                            OrganiserNotification.handled_at.is_(None),
                        )
                        .values(handled_at=now)
                        .execution_options(synchronize_session=False)
                    )
                    _audit(session, now, "zalo_oa_authorised", oa_id)
                break
            except IntegrityError:
                # Two first pairs at once (PostgreSQL): the other insert won; update it.
                if attempt == 2:
                    raise RuntimeError(
                        f"Không lưu được token của Zalo OA {oa_id} (IntegrityError)."
                    ) from None
            except SQLAlchemyError as error:
                # the error's text quotes the statement's parameters: the tokens
                raise RuntimeError(
                    f"Không lưu được token của Zalo OA {oa_id} ({type(error).__name__})."
                ) from None
        self._paused_until.pop(oa_id, None)
        log.info("zalo: OA %s authorised; token pair stored", oa_id)

    async def proactive_refresh(
        self, oa_ids: Iterable[str] | None = None
    ) -> dict[str, RefreshOutcome]:
        """Refresh every pair (of `oa_ids`, default all stored) that expires within the
        margin. One OA's failure never stops the others; each gets its outcome."""
        ids = list(oa_ids) if oa_ids is not None else await self.known_oas()
        outcomes: dict[str, RefreshOutcome] = {}
        for oa_id in ids:
            try:
                pair = await self._read(oa_id)
                if pair is None or pair.needs_reauthorisation:
                    outcomes[oa_id] = RefreshOutcome.NOT_AUTHORISED
                    continue
                if not self._due(pair, None, self._clock()):
                    outcomes[oa_id] = RefreshOutcome.FRESH
                    continue
                _, rotated = await self._refresh(oa_id, None)
                outcomes[oa_id] = RefreshOutcome.REFRESHED if rotated else RefreshOutcome.FRESH
            except ZaloNotAuthorised:
                outcomes[oa_id] = RefreshOutcome.NOT_AUTHORISED
            except (AdapterError, SQLAlchemyError) as error:
                log.warning("zalo: OA %s: proactive refresh failed (%s)", oa_id, _reason(error))
                outcomes[oa_id] = RefreshOutcome.FAILED
        return outcomes

    async def refresh_forever(
        self, oa_ids: Iterable[str] | None = None, *, every: timedelta = timedelta(minutes=10)
    ) -> None:
        """`proactive_refresh` every `every` until cancelled (the server's background task)."""
        ids = list(oa_ids) if oa_ids is not None else None
        while True:
            try:
                await self.proactive_refresh(ids)
            except Exception:
                log.exception("zalo: proactive token refresh failed")
            await asyncio.sleep(every.total_seconds())

    async def status(self, oa_id: str) -> TokenStatus | None:
        async with self._db.reads() as session:
            row = await session.get(ZaloTokenPair, oa_id)
            if row is None:
                return None
            return TokenStatus(
                oa_id=row.oa_id,
                access_expires_at=row.access_expires_at,
                generation=row.generation,
                authorised_at=row.authorised_at,
                rotated_at=row.rotated_at,
                needs_reauthorisation=row.needs_reauthorisation,
                problem=row.problem,
                lease_owner=row.lease_owner,
                lease_until=row.lease_until,
            )

    async def known_oas(self) -> list[str]:
        async with self._db.reads() as session:
            result = await session.scalars(
                select(ZaloTokenPair.oa_id).order_by(ZaloTokenPair.oa_id)
            )
            return list(result)

    async def close(self) -> None:
        """Wait for refreshes still running for cancelled callers (their pairs get saved)."""
        while self._work:
            await asyncio.gather(*list(self._work), return_exceptions=True)

    # -- the refresh protocol ---------------------------------------------------------------

    async def _refresh(self, oa_id: str, failed: str | None) -> tuple[str, bool]:
        """The access token to use after a refresh (by us or by whoever held the lease), and
        whether this call rotated the pair. `failed` is the token Zalo refused, if any."""
        lock = self._locks.setdefault(oa_id, asyncio.Lock())
        async with lock:  # tasks of this process queue here, processes on the lease row
            owner = f"{self._owner_prefix}:{uuid.uuid4().hex[:12]}"
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.wait.total_seconds()
            pause = 0.02
            while True:
                pair = self._usable(oa_id, await self._read(oa_id))
                if not self._due(pair, failed, self._clock()):
                    return pair.access_token, False
                if await self._take_lease(oa_id, owner):
                    break
                if loop.time() >= deadline:
                    raise RetryLater(
                        f"Một tiến trình khác đang gia hạn token của Zalo OA {oa_id} quá lâu; "
                        "thử lại sau."
                    )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.25)
            # From here on the caller's cancellation must not interrupt: the refresh token
            # may already be spent, and only the saved pair keeps the OA authorised.
            work = asyncio.ensure_future(self._refresh_leased(oa_id, owner, failed))
            self._work.add(work)
            work.add_done_callback(self._work.discard)
            return await asyncio.shield(work)

    async def _refresh_leased(self, oa_id: str, owner: str, failed: str | None) -> tuple[str, bool]:
        try:
            # again: someone may have refreshed between our read and our lease
            pair = self._usable(oa_id, await self._read(oa_id))
            if not self._due(pair, failed, self._clock()):
                return pair.access_token, False
            spent = pair.refresh_token
            try:
                new = await refresh_tokens(
                    self._http,
                    self._oauth,
                    self._app_id,
                    self._secret,
                    spent,
                    timeout=self.http_timeout,
                )
            except TokenRefused as refusal:
                current = await self._refused(oa_id, owner, spent, refusal)
                if current is not None:
                    return current.access_token, False
                raise ZaloNotAuthorised(oa_id, self._notice(oa_id, str(refusal))) from None
            return await self._save_persistently(oa_id, owner, spent, new)
        finally:
            try:
                await self._release(oa_id, owner)
            except SQLAlchemyError as error:
                log.warning(
                    "zalo: OA %s: could not release the refresh lease (%s); it expires by itself",
                    oa_id,
                    type(error).__name__,
                )

    async def _save_persistently(
        self, oa_id: str, owner: str, spent: str, new: TokenPair
    ) -> tuple[str, bool]:
        """`_save`, retried through a short database outage: Zalo has spent the old refresh
        token, so this pair is the OA's only valid grant."""
        pause = 0.1
        for attempt in range(1, SAVE_ATTEMPTS + 1):
            try:
                return await self._save(oa_id, owner, spent, new)
            except SQLAlchemyError as error:
                if attempt == SAVE_ATTEMPTS:
                    log.error(
                        "Zalo OA %s: không lưu được cặp token mới vào cơ sở dữ liệu (%s); "
                        "token gia hạn cũ đã bị Zalo thu hồi, OA có thể cần cấp quyền lại.",
                        oa_id,
                        type(error).__name__,
                    )
                    raise RetryLater(
                        f"Không lưu được token mới của Zalo OA {oa_id} ({type(error).__name__})."
                    ) from None
                log.warning(
                    "zalo: OA %s: saving the new token pair failed (%s); retrying",
                    oa_id,
                    type(error).__name__,
                )
                await asyncio.sleep(pause)
                pause *= 2
        raise AssertionError("unreachable")

    async def _save(self, oa_id: str, owner: str, spent: str, new: TokenPair) -> tuple[str, bool]:
        """Store `new` over the pair whose refresh token `spent` was (compare-and-set)."""
        now = self._clock()
        async with self._db.sessions() as session, session.begin():
            row = await _locked_row(session, oa_id)
            if row is not None and row.refresh_token != spent:
                # Someone stored another pair meanwhile (an OA admin's new consent): it wins.
                log.warning(
                    "zalo: OA %s: a newer token pair was stored during our refresh; ours is "
                    "dropped",
                    oa_id,
                )
                return row.access_token, False
            if row is None:
                # The row was deleted during the refresh; the new pair is the only valid one.
                row = ZaloTokenPair(oa_id=oa_id, generation=0, authorised_at=now)
                session.add(row)
            elif row.lease_owner != owner:
                # The lease ran out while Zalo answered. The new pair is still the only valid
                # one (our refresh token is spent): keeping it is right, losing it is not.
                log.warning(
                    "zalo: OA %s: refresh lease expired during the refresh; pair saved anyway",
                    oa_id,
                )
            if row.needs_reauthorisation:
                log.warning(
                    "zalo: OA %s: token refreshed after all; the re-authorisation notice is "
                    "obsolete",
                    oa_id,
                )
            row.access_token = new.access_token
            row.refresh_token = new.refresh_token
            row.access_expires_at = now + timedelta(seconds=new.expires_in)
            row.generation = (row.generation or 0) + 1
            row.rotated_at = now
            row.needs_reauthorisation = False
            row.problem = None
            if row.lease_owner == owner:
                row.lease_owner = row.lease_until = None
            _audit(session, now, "zalo_token_refreshed", oa_id, {"generation": row.generation})
        self._paused_until.pop(oa_id, None)
        log.info("zalo: OA %s: token pair refreshed", oa_id)
        return new.access_token, True

    async def _refused(
        self, oa_id: str, owner: str, spent: str, refusal: TokenRefused
    ) -> _Pair | None:
        """Zalo refused `spent`. Returns the stored pair when a newer one explains it (use
        that); otherwise flags the OA and notifies the organisers once, and returns None."""
        now = self._clock()
        problem = str(refusal)
        async with self._db.sessions() as session, session.begin():
            row = await _locked_row(session, oa_id)
            if row is None:
                return None
            if row.refresh_token != spent and not row.needs_reauthorisation:
                return _snapshot(row)
            if row.needs_reauthorisation:
                return None
            row.needs_reauthorisation = True
            row.problem = problem
            if row.lease_owner == owner:
                row.lease_owner = row.lease_until = None
            session.add(
                OrganiserNotification(
                    district=self._district(oa_id),
                    participant_id=None,
                    kind=NotificationKind.REAUTHORISE,
                    text=self._notice(oa_id, problem),
                    created_at=now,
                )
            )
            _audit(session, now, "zalo_token_refused", oa_id, {"code": refusal.code})
        log.error(
            "Zalo OA %s (đơn vị %s) cần cấp quyền lại: mở %s bằng tài khoản quản trị viên OA "
            "và bấm «Cho phép». Chi tiết: %s",
            oa_id,
            self._district(oa_id),
            self.start_url,
            problem,
        )
        return None

    # -- lease rows ---------------------------------------------------------------------------

    async def _take_lease(self, oa_id: str, owner: str) -> bool:
        now = self._clock()
        async with self._db.sessions() as session, session.begin():
            result = await session.execute(
                update(ZaloTokenPair)
                .where(
                    ZaloTokenPair.oa_id == oa_id,
                    or_(ZaloTokenPair.lease_until.is_(None), ZaloTokenPair.lease_until <= now),
                )
                .values(lease_owner=owner, lease_until=now + self.lease)
                .execution_options(synchronize_session=False)
            )
        return _rowcount(result) == 1

    async def _release(self, oa_id: str, owner: str) -> None:
        async with self._db.sessions() as session, session.begin():
            await session.execute(
                update(ZaloTokenPair)
                .where(ZaloTokenPair.oa_id == oa_id, ZaloTokenPair.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
                .execution_options(synchronize_session=False)
            )

    # -- helpers ------------------------------------------------------------------------------

    async def _read(self, oa_id: str) -> _Pair | None:
        async with self._db.reads() as session:
            row = await session.get(ZaloTokenPair, oa_id)
            return None if row is None else _snapshot(row)

    def _due(self, pair: _Pair, failed: str | None, now: datetime) -> bool:
        if failed is not None:
            return pair.access_token == failed  # unchanged: nobody has refreshed since
        return pair.access_expires_at - now <= self.refresh_margin

    def _usable(self, oa_id: str, pair: _Pair | None) -> _Pair:
        if pair is None:
            raise ZaloNotAuthorised(
                oa_id,
                f"Zalo OA {oa_id} chưa cấp quyền cho Loa: quản trị viên OA hãy mở "
                f"{self.start_url} và bấm «Cho phép».",
            )
        if pair.needs_reauthorisation:
            raise ZaloNotAuthorised(oa_id, self._notice(oa_id, pair.problem))
        return pair

    def _notice(self, oa_id: str, problem: str | None) -> str:
        detail = f" Chi tiết: {problem}" if problem else ""
        return (
            f"Zalo OA {oa_id} cần cấp quyền lại: Zalo không gia hạn được token nên Loa chưa gửi "
            f"được tin nhắn Zalo (tin chưa gửi được giữ lại). Quản trị viên OA hãy mở "
            f"{self.start_url} và bấm «Cho phép».{detail}"
        )

    def _district(self, oa_id: str) -> str:
        return self._districts.get(oa_id, oa_id)

    def _paused(self, oa_id: str) -> bool:
        until = self._paused_until.get(oa_id)
        return until is not None and asyncio.get_running_loop().time() < until

    def _pause(self, oa_id: str) -> None:
        self._paused_until[oa_id] = asyncio.get_running_loop().time() + self._retry_pause


async def _locked_row(session: AsyncSession, oa_id: str) -> ZaloTokenPair | None:
    """The row, locked for this (short) write transaction: FOR UPDATE on PostgreSQL; on SQLite
    the transaction's BEGIN IMMEDIATE already holds the write lock."""
    result = await session.execute(
        select(ZaloTokenPair).where(ZaloTokenPair.oa_id == oa_id).with_for_update()
    )
    return result.scalar_one_or_none()


def _audit(
    session: AsyncSession,
    now: datetime,
    action: str,
    oa_id: str,
    detail: dict[str, Any] | None = None,
) -> None:
    session.add(
        AuditEntry(
            at=now,
            actor=BOT,
            action=action,
            participant_id=None,
            detail={"oa_id": oa_id, **(detail or {})},
        )
    )


def _rowcount(result: Any) -> int:
    count = getattr(result, "rowcount", -1)
    return int(count) if isinstance(count, int) else -1


def _reason(error: BaseException) -> str:
    """For the log: the error's class and message (adapter messages never carry tokens or
    URLs; database errors are named only, their text may quote parameters)."""
    if isinstance(error, SQLAlchemyError):
        return type(error).__name__
    return f"{type(error).__name__}: {error}"


__all__ = [
    "START_PATH",
    "RefreshOutcome",
    "TokenStatus",
    "ZaloNotAuthorised",
    "ZaloTokenKeeper",
]
