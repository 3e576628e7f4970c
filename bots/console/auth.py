"""Organiser accounts and logins: argon2 password hashes, session tokens, CSRF, rate limits.

- Passwords are hashed with argon2id (argon2-cffi's defaults); only the hash is stored.
  Hashing costs tens of milliseconds and 64 MiB, so it runs in a thread, off the event loop.
- A login creates a random session token. The cookie carries the token; the database keeps
  its SHA-256 only, so a copy of the database opens no session. Nothing lives in process
  memory: any process behind the load balancer accepts the cookie.
- Every form of a logged-in page carries a CSRF token derived from the session token (a
  cross-site page can neither read the cookie nor compute it). The login form, before any
  session exists, uses a double-submit cookie.
- Failed logins are rows in `login_attempts`; too many for one account or one address within
  the window block further tries (without checking the password) until it passes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bots.records.db import Database
from bots.records.models import (
    LoginAttempt,
    Organiser,
    OrganiserRole,
    OrganiserSession,
)
from flows.compiler import CompiledBundle

Sessions = async_sessionmaker[AsyncSession]

FIRST_ADMIN_LOGIN = "admin"
MIN_PASSWORD = 10
# Unambiguous on a phone keyboard and when read aloud (no 0/o, 1/l/i).
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"

_hasher = PasswordHasher()
_dummy_hash: str | None = None


# -- passwords ----------------------------------------------------------------------------------


def generate_password(groups: int = 3, size: int = 5) -> str:
    """A random password such as "k7mq2-vx9rd-a3hnp" (about 74 bits)."""
    return "-".join(
        "".join(secrets.choice(_ALPHABET) for _ in range(size)) for _ in range(groups)
    )


def password_problem(password: str, login: str = "") -> str | None:
    """Why a new password is refused (Vietnamese), or None."""
    if len(password) < MIN_PASSWORD:
        return f"Mật khẩu cần ít nhất {MIN_PASSWORD} ký tự."
    if login and password.strip().lower() == login.strip().lower():
        return "Mật khẩu không được trùng với tên đăng nhập."
    if len(set(password)) < 4:
        return "Mật khẩu quá dễ đoán."
    return None


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _dummy() -> str:
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))
    return _dummy_hash


async def hash_password_async(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


async def check_password_async(hashed: str | None, password: str) -> bool:
    """Verify off the event loop. An unknown account is checked against a dummy hash, so the
    answer takes as long whether the account exists or not."""
    if hashed is None:
        await asyncio.to_thread(verify_password, _dummy(), password)
        return False
    return await asyncio.to_thread(verify_password, hashed, password)


def needs_rehash(hashed: str) -> bool:
    try:
        return _hasher.check_needs_rehash(hashed)
    except InvalidHashError:
        return False


def normal_login(login: str) -> str:
    return login.strip().lower()


# -- accounts -----------------------------------------------------------------------------------


class AccountError(ValueError):
    """An account cannot be created or changed as asked (the message is Vietnamese)."""


async def create_organiser(
    session: AsyncSession,
    *,
    login: str,
    password_hash: str,
    role: OrganiserRole,
    org: str,
    now: datetime,
    name: str | None = None,
    units: list[str] | None = None,
    must_change_password: bool = False,
    created_by: str | None = None,
) -> Organiser:
    """Add an account inside the caller's transaction; `AccountError` if the login is taken."""
    login = normal_login(login)
    if not login:
        raise AccountError("Thiếu tên đăng nhập (email).")
    taken = await session.scalar(select(Organiser.id).where(Organiser.login == login))
    if taken is not None:
        raise AccountError(f"Tài khoản {login} đã có.")
    organiser = Organiser(
        login=login,
        name=name or None,
        password_hash=password_hash,
        role=role,
        org=org,
        units=list(units or []),
        active=True,
        must_change_password=must_change_password,
        created_by=created_by,
        created_at=now,
        updated_at=now,
        password_changed_at=now,
    )
    session.add(organiser)
    await session.flush()
    return organiser


async def set_password(
    session: AsyncSession,
    organiser: Organiser,
    password_hash: str,
    now: datetime,
    *,
    must_change: bool = False,
    keep_session: int | None = None,
) -> None:
    """New password hash; every other login of the account ends."""
    organiser.password_hash = password_hash
    organiser.must_change_password = must_change
    organiser.password_changed_at = now
    organiser.updated_at = now
    condition = [
        OrganiserSession.organiser_id == organiser.id,
        OrganiserSession.revoked_at.is_(None),
    ]
    if keep_session is not None:
        condition.append(OrganiserSession.id != keep_session)
    await session.execute(update(OrganiserSession).where(*condition).values(revoked_at=now))


async def ensure_first_admin(
    db: Database, bundle: CompiledBundle, *, now: datetime | None = None
) -> str | None:
    """With no organiser account at all, create `admin` for the first district (the demo one)
    with a random one-time password, and return that password for `loa serve` to print once;
    None when accounts exist (or another process just created the first)."""
    moment = now or datetime.now(UTC)
    async with db.reads() as session:
        if await session.scalar(select(func.count()).select_from(Organiser)):
            return None
    org = next(iter(bundle.districts), None) or bundle.default_district.slug
    if not org:
        return None
    password = generate_password()
    hashed = await hash_password_async(password)
    try:
        async with db.sessions() as session, session.begin():
            if await session.scalar(select(func.count()).select_from(Organiser)):
                return None
            await create_organiser(
                session,
                login=FIRST_ADMIN_LOGIN,
                password_hash=hashed,
                role=OrganiserRole.ADMIN,
                org=org,
                now=moment,
                name="Quản trị viên",
                must_change_password=True,
                created_by="first-run",
            )
    except (IntegrityError, AccountError):
        return None
    return password


# -- sessions -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    idle: timedelta = timedelta(hours=12)  # a login unused this long ends
    absolute: timedelta = timedelta(days=7)  # and every login ends after this
    touch_every: timedelta = timedelta(minutes=5)  # how often last_seen_at is written


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def csrf_for(token: str) -> str:
    """The CSRF token of a session: bound to it, unguessable without the cookie."""
    return hmac.new(token.encode("utf-8"), b"loa-console-csrf", hashlib.sha256).hexdigest()


def same_token(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


async def open_session(
    session: AsyncSession,
    organiser: Organiser,
    now: datetime,
    policy: SessionPolicy,
    *,
    ip: str | None,
    user_agent: str | None,
) -> str:
    """A new login for `organiser`; returns the token for the cookie (never stored)."""
    token = secrets.token_urlsafe(32)
    session.add(
        OrganiserSession(
            token_hash=token_hash(token),
            organiser_id=organiser.id,
            created_at=now,
            last_seen_at=now,
            expires_at=now + policy.absolute,
            ip=(ip or "")[:64] or None,
            user_agent=(user_agent or "")[:255] or None,
        )
    )
    organiser.last_login_at = now
    await session.flush()
    return token


async def find_session(
    db: Database, token: str, now: datetime, policy: SessionPolicy
) -> tuple[OrganiserSession, Organiser] | None:
    """The live login of a cookie token (touching it now and then), or None."""
    if not token or len(token) > 200:
        return None
    async with db.reads() as session:
        row = (
            await session.execute(
                select(OrganiserSession, Organiser)
                .join(Organiser, Organiser.id == OrganiserSession.organiser_id)
                .where(
                    OrganiserSession.token_hash == token_hash(token),
                    OrganiserSession.revoked_at.is_(None),
                    OrganiserSession.expires_at > now,
                    OrganiserSession.last_seen_at > now - policy.idle,
                    Organiser.active.is_(True),
                )
            )
        ).first()
    if row is None:
        return None
    login, organiser = row[0], row[1]
    if now - login.last_seen_at >= policy.touch_every:
        async with db.sessions() as session, session.begin():
            await session.execute(
                update(OrganiserSession)
                .where(OrganiserSession.id == login.id)
                .values(last_seen_at=now)
            )
        login.last_seen_at = now
    return login, organiser


async def revoke_session(session: AsyncSession, login_id: int, now: datetime) -> None:
    await session.execute(
        update(OrganiserSession).where(OrganiserSession.id == login_id).values(revoked_at=now)
    )


# -- rate limit ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateLimit:
    per_account: int = 5  # failures of one account ...
    per_address: int = 20  # ... or from one address (a union office shares one NAT) ...
    window: timedelta = timedelta(minutes=15)  # ... within this long block further tries


async def blocked_for(
    session: AsyncSession, login: str, ip: str, now: datetime, limit: RateLimit
) -> timedelta | None:
    """How long until this login may be tried again (None: it may be tried now). Failures of
    an account count from its last successful login."""
    since = now - limit.window
    last_ok = await session.scalar(
        select(func.max(LoginAttempt.at)).where(
            LoginAttempt.login == login, LoginAttempt.success.is_(True), LoginAttempt.at > since
        )
    )
    account_since = max(since, last_ok) if last_ok is not None else since
    waits: list[timedelta] = []
    for condition, cap, start in (
        (LoginAttempt.login == login, limit.per_account, account_since),
        (LoginAttempt.ip == ip, limit.per_address, since),
    ):
        times = (
            await session.scalars(
                select(LoginAttempt.at)
                .where(condition, LoginAttempt.success.is_(False), LoginAttempt.at > start)
                .order_by(LoginAttempt.at.desc())
                .limit(cap)
            )
        ).all()
        if len(times) >= cap:
            # Free again once the oldest of the last `cap` failures leaves the window.
            waits.append(times[-1] + limit.window - now)
    return max(waits) if waits else None


def record_attempt(session: AsyncSession, login: str, ip: str, now: datetime, ok: bool) -> None:
    session.add(LoginAttempt(at=now, login=login[:320], ip=ip[:64], success=ok))


async def forget_old(session: AsyncSession, now: datetime, keep: timedelta) -> None:
    """Housekeeping: login attempts and ended sessions older than `keep`."""
    await session.execute(delete(LoginAttempt).where(LoginAttempt.at < now - keep))
    await session.execute(delete(OrganiserSession).where(OrganiserSession.expires_at < now - keep))


__all__ = [
    "FIRST_ADMIN_LOGIN",
    "MIN_PASSWORD",
    "AccountError",
    "RateLimit",
    "SessionPolicy",
    "blocked_for",
    "check_password_async",
    "create_organiser",
    "csrf_for",
    "ensure_first_admin",
    "find_session",
    "forget_old",
    "generate_password",
    "hash_password",
    "hash_password_async",
    "needs_rehash",
    "normal_login",
    "open_session",
    "password_problem",
    "record_attempt",
    "revoke_session",
    "same_token",
    "set_password",
    "token_hash",
    "verify_password",
]
