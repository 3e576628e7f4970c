"""Logins: argon2 hashes, hashed session tokens, cookies, rate limits, logout, passwords,
the first admin and `loa organiser`."""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import func, select

from bots import organisers
from bots.console import auth
from bots.console.app import COOKIE, LOGIN_CSRF_COOKIE, mount_console
from bots.records.db import default_url, open_database
from bots.records.models import LoginAttempt, Organiser, OrganiserRole, OrganiserSession
from tests.console.conftest import (
    FLOWS,
    LOGINS,
    PASSWORD,
    AiohttpClient,
    Client,
    World,
    csrf_in,
    page_csrf,
    quick_sign_in,
    sign_in,
)


async def login(client: Client, who: str, password: str, *, next_url: str = "",
                headers: dict[str, str] | None = None) -> Any:
    page = await client.get("/admin/login")
    token = csrf_in(await page.text())
    return await client.post(
        "/admin/login",
        data={"csrf": token, "login": who, "password": password, "next": next_url},
        allow_redirects=False,
        headers=headers or {},
    )


async def test_login_sets_a_strict_cookie_and_stores_only_hashes(
    client: Client, world: World
) -> None:
    response = await login(client, LOGINS["org_a"].upper(), PASSWORD)  # any letter case
    assert response.status == 303
    assert response.headers["Location"] == "/admin/"
    cookie = next(c for c in response.headers.getall("Set-Cookie") if c.startswith(COOKIE + "="))
    lowered = cookie.lower()
    assert "httponly" in lowered and "samesite=lax" in lowered and "path=/admin" in lowered
    assert "secure" not in lowered  # plain http in this test (LOA_PUBLIC_URL not https)
    token = response.cookies[COOKIE].value
    async with world.db.reads() as session:
        organiser = await session.get(Organiser, world.organisers["org_a"])
        stored = (await session.scalars(select(OrganiserSession.token_hash))).all()
    assert organiser is not None
    assert organiser.password_hash.startswith("$argon2id$")
    assert PASSWORD not in organiser.password_hash
    assert auth.verify_password(organiser.password_hash, PASSWORD)
    assert token not in stored
    assert hashlib.sha256(token.encode()).hexdigest() in stored
    page = await client.get("/admin/")
    assert page.status == 200
    assert "Cán bộ org_a" in await page.text()


async def test_secure_cookie_behind_https(world: World, aiohttp_client: AiohttpClient) -> None:
    app = web.Application()
    mount_console(app, world.deps(secure_cookies=True))
    client = await aiohttp_client(app)
    page = await client.get("/admin/login")
    assert "secure" in page.headers["Set-Cookie"].lower()
    token = csrf_in(await page.text())
    # A client keeps a Secure cookie away from plain http: hand it over as an https one would.
    response = await client.post("/admin/login", allow_redirects=False, data={
        "csrf": token, "login": LOGINS["org_a"], "password": PASSWORD},
        headers={"Cookie": f"{LOGIN_CSRF_COOKIE}={token}"})
    assert response.status == 303
    session_cookie = next(c for c in response.headers.getall("Set-Cookie")
                          if c.startswith(COOKIE + "="))
    assert "secure" in session_cookie.lower()


async def test_pages_are_private_and_framed_by_nobody(client: Client, world: World) -> None:
    await quick_sign_in(client, world, "org_a")
    response = await client.get("/admin/")
    assert response.headers["Cache-Control"] == "private, no-store"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    html = await response.text()
    assert "http://" not in html and "https://" not in html  # no external resource


async def test_wrong_password_and_unknown_account_look_alike(client: Client) -> None:
    wrong = await login(client, LOGINS["org_a"], "not-the-password")
    unknown = await login(client, "nobody@example.com", "not-the-password")
    assert wrong.status == unknown.status == 401
    assert "Email hoặc mật khẩu không đúng." in await wrong.text()
    assert "Email hoặc mật khẩu không đúng." in await unknown.text()
    assert COOKIE not in wrong.cookies


async def test_login_without_csrf_is_refused(client: Client) -> None:
    await client.get("/admin/login")
    response = await client.post("/admin/login", allow_redirects=False,
                                 data={"login": LOGINS["org_a"], "password": PASSWORD})
    assert response.status == 403
    assert COOKIE not in response.cookies


async def test_rate_limit_per_account(client: Client, world: World) -> None:
    for _ in range(5):
        assert (await login(client, LOGINS["org_a"], "sai-mat-khau")).status == 401
    blocked = await login(client, LOGINS["org_a"], PASSWORD)  # even the right password
    assert blocked.status == 429
    assert "thử lại sau 15 phút" in await blocked.text()
    assert COOKIE not in blocked.cookies
    # Another account from the same address is not blocked by this one's failures.
    assert (await login(client, LOGINS["org_b"], PASSWORD)).status == 303
    async with world.db.reads() as session:
        failures = await session.scalar(
            select(func.count()).select_from(LoginAttempt).where(
                LoginAttempt.login == LOGINS["org_a"], LoginAttempt.success.is_(False)))
    assert failures == 5  # the blocked try was not even checked, nor counted
    world.clock.advance(minutes=15, seconds=1)
    client.session.cookie_jar.clear()
    assert (await login(client, LOGINS["org_a"], PASSWORD)).status == 303


async def test_rate_limit_per_address(world: World, aiohttp_client: AiohttpClient) -> None:
    app = web.Application()
    mount_console(app, world.deps(
        trust_forwarded=True, rate_limit=auth.RateLimit(per_account=5, per_address=6)))
    client = await aiohttp_client(app)
    attacker = {"X-Forwarded-For": "203.0.113.9"}
    for i in range(6):
        response = await login(client, f"guess{i}@example.com", "x" * 12, headers=attacker)
        assert response.status == 401
    blocked = await login(client, LOGINS["org_a"], PASSWORD, headers=attacker)
    assert blocked.status == 429
    elsewhere = await login(client, LOGINS["org_a"], PASSWORD,
                            headers={"X-Forwarded-For": "198.51.100.7"})
    assert elsewhere.status == 303
    async with world.db.reads() as session:
        ips = set((await session.scalars(select(LoginAttempt.ip))).all())
    assert ips == {"203.0.113.9", "198.51.100.7"}


async def test_logout_ends_the_session(client: Client, world: World) -> None:
    csrf = await sign_in(client, world, "org_a")
    token = client.session.cookie_jar.filter_cookies(client.make_url("/admin/"))[COOKIE].value
    response = await client.post("/admin/logout", data={"csrf": csrf}, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/admin/login"
    client.session.cookie_jar.update_cookies({COOKIE: token}, client.make_url("/admin/"))
    again = await client.get("/admin/", allow_redirects=False)
    assert again.status == 303  # the old cookie is worth nothing now


async def test_idle_and_absolute_expiry(client: Client, world: World) -> None:
    await quick_sign_in(client, world, "org_a")
    world.clock.advance(hours=11)
    assert (await client.get("/admin/", allow_redirects=False)).status == 200
    world.clock.advance(hours=11)  # used 11 h ago: still within the 12 h idle limit
    assert (await client.get("/admin/", allow_redirects=False)).status == 200
    world.clock.advance(hours=12, minutes=1)
    assert (await client.get("/admin/", allow_redirects=False)).status == 303


async def test_next_only_leads_inside_the_console(client: Client, world: World) -> None:
    sid = world.submissions["an"]
    inside = await login(client, LOGINS["org_a"], PASSWORD, next_url=f"/admin/submissions/{sid}")
    assert inside.headers["Location"] == f"/admin/submissions/{sid}"
    client.session.cookie_jar.clear()
    for evil in ("//evil.example/x", "https://evil.example/", "/admin/\\evil", "/chat/"):
        response = await login(client, LOGINS["org_a"], PASSWORD, next_url=evil)
        assert response.headers["Location"] == "/admin/", evil
        client.session.cookie_jar.clear()


async def test_a_disabled_account_is_signed_out(client: Client, world: World) -> None:
    await quick_sign_in(client, world, "org_a")
    async with world.db.sessions() as session, session.begin():
        organiser = await session.get(Organiser, world.organisers["org_a"])
        assert organiser is not None
        organiser.active = False
    assert (await client.get("/admin/", allow_redirects=False)).status == 303
    assert (await login(client, LOGINS["org_a"], PASSWORD)).status == 401


async def test_first_admin_must_change_the_one_time_password(
    tmp_path: Path, world: World, aiohttp_client: AiohttpClient
) -> None:
    db = await open_database(default_url(tmp_path / "fresh"))
    try:
        password = await auth.ensure_first_admin(db, world.bundle)
        assert password is not None and len(password) >= 15
        assert await auth.ensure_first_admin(db, world.bundle) is None  # only once
        async with db.reads() as session:
            admin = await session.scalar(select(Organiser))
        assert admin is not None
        assert admin.login == auth.FIRST_ADMIN_LOGIN
        assert admin.role is OrganiserRole.ADMIN
        assert admin.org == next(iter(world.bundle.districts))  # the first (demo) district
        assert admin.must_change_password and password not in admin.password_hash

        world.db = db
        app = web.Application()
        mount_console(app, world.deps())
        client = await aiohttp_client(app)
        response = await login(client, "admin", password)
        assert response.status == 303
        queue = await client.get("/admin/", allow_redirects=False)
        assert queue.status == 303 and queue.headers["Location"] == "/admin/password"
        csrf = await page_csrf(client)
        short = await client.post("/admin/password", data={
            "csrf": csrf, "current": password, "new": "ngan", "again": "ngan"})
        assert short.status == 400
        assert "ít nhất 10 ký tự" in await short.text()
        new = "mot-mat-khau-moi-dai"
        done = await client.post("/admin/password", data={
            "csrf": csrf, "current": password, "new": new, "again": new})
        assert done.status == 200 and "Đã đổi mật khẩu" in await done.text()
        assert (await client.get("/admin/", allow_redirects=False)).status == 200
        client.session.cookie_jar.clear()
        assert (await login(client, "admin", password)).status == 401
        assert (await login(client, "admin", new)).status == 303
    finally:
        await db.close()


async def test_changing_the_password_ends_other_sessions(client: Client, world: World) -> None:
    other_csrf = await quick_sign_in(client, world, "org_a")
    other = client.session.cookie_jar.filter_cookies(client.make_url("/admin/"))[COOKIE].value
    csrf = await sign_in(client, world, "org_a")
    new = "mat-khau-moi-cua-tan-phu"
    response = await client.post("/admin/password", data={
        "csrf": csrf, "current": PASSWORD, "new": new, "again": new})
    assert response.status == 200
    assert (await client.get("/admin/", allow_redirects=False)).status == 200  # this one stays
    client.session.cookie_jar.update_cookies({COOKIE: other}, client.make_url("/admin/"))
    assert other_csrf
    assert (await client.get("/admin/", allow_redirects=False)).status == 303


async def test_admin_creates_an_account_inside_its_subtree_only(
    client: Client, world: World
) -> None:
    csrf = await quick_sign_in(client, world, "admin_a")  # admin of Tân Phú
    outside = await client.post("/admin/organisers", data={
        "csrf": csrf, "login": "x@example.com", "role": "organiser", "org": "binh-tan"})
    assert outside.status == 400
    assert "không thuộc phạm vi" in await outside.text()
    created = await client.post("/admin/organisers", data={
        "csrf": csrf, "login": "Cham.PhuThoHoa@Example.com", "name": "Chấm Phú Thọ Hòa",
        "role": "reviewer", "org": "tan-phu", "units": "phu-tho-hoa"})
    assert created.status == 200
    html = await created.text()
    temporary = html.split('<p class="password"><code>')[1].split("</code>")[0]
    async with world.db.reads() as session:
        account = await session.scalar(
            select(Organiser).where(Organiser.login == "cham.phuthohoa@example.com"))
    assert account is not None and account.units == ["phu-tho-hoa"]
    assert account.must_change_password and temporary not in account.password_hash
    assert auth.verify_password(account.password_hash, temporary)
    # The Bình Tân organiser's account is not even listed, and cannot be changed.
    listing = await (await client.get("/admin/organisers")).text()
    assert LOGINS["org_b"] not in listing and LOGINS["org_a"] in listing
    response = await client.post(f"/admin/organisers/{world.organisers['org_b']}",
                                 data={"csrf": csrf, "action": "disable"})
    assert response.status == 404


def _args(**values: Any) -> argparse.Namespace:
    base: dict[str, Any] = {"config": str(FLOWS), "units": "", "name": "", "generate": False}
    base.update(values)
    return argparse.Namespace(**base)


def test_loa_organiser_add_generates_and_stores_a_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOA_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("LOA_DATABASE_URL", raising=False)
    code = organisers.main(_args(action="add", email="Lan@Example.com", org="tan-phu",
                                 role="organiser", generate=True))
    out = capsys.readouterr().out
    assert code == 0
    assert "lan@example.com" in out and "Quận Đoàn Tân Phú" in out
    password = out.strip().rsplit(": ", 1)[1]
    # Typed on standard input (not a terminal): read from one line.
    monkeypatch.setattr(sys, "stdin", io.StringIO("mot-mat-khau-go-tay\n"))
    code = organisers.main(_args(action="add", email="cham@example.com", org="tan-phu",
                                 role="reviewer", units="tan-quy"))
    assert code == 0
    bad = organisers.main(_args(action="add", email="x@example.com", org="khong-co",
                                role="admin", generate=True))
    assert bad == 1
    assert "Không có đơn vị 'khong-co'" in capsys.readouterr().err

    import sqlite3

    con = sqlite3.connect(tmp_path / "var" / "loa.sqlite3")
    rows = dict(con.execute("SELECT login, password_hash FROM organisers").fetchall())
    con.close()
    assert set(rows) == {"lan@example.com", "cham@example.com"}
    assert auth.verify_password(rows["lan@example.com"], password)
    assert auth.verify_password(rows["cham@example.com"], "mot-mat-khau-go-tay")
    assert "mot-mat-khau-go-tay" not in rows["cham@example.com"]
