"""`loa organiser`: console accounts from the command line.

    loa organiser add EMAIL --org SLUG --role admin|organiser|reviewer [--units a,b] [--name N]
                      [--generate]
    loa organiser list
    loa organiser password EMAIL [--generate]     set a new password (ends its logins)
    loa organiser disable EMAIL | enable EMAIL

The password is asked twice without echo (or read from one line of standard input when it is
not a terminal); `--generate` makes a random one and prints it once. Only its argon2 hash is
stored. `--org` must be a node of the organisation tree in flows.yaml (LOA_CONFIG / --config).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from datetime import UTC, datetime
from pathlib import Path

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select

from bots.console import auth
from bots.console.tree import OrgTree, load_org_tree
from bots.records.db import Database, open_database
from bots.records.models import Organiser, OrganiserRole
from bots.settings import Settings, SettingsError, load

ROLES = {role.value: role for role in OrganiserRole}
ROLE_NAMES = {
    OrganiserRole.ADMIN: "quản trị",
    OrganiserRole.ORGANISER: "cán bộ phụ trách",
    OrganiserRole.REVIEWER: "người chấm",
}


class CommandError(Exception):
    """A message for the operator (Vietnamese); exit code 1."""


def _ask_password(login: str, generate: bool) -> tuple[str, bool]:
    """(password, generated)."""
    if generate:
        return auth.generate_password(), True
    if sys.stdin.isatty():
        first = getpass.getpass("Mật khẩu (ít nhất 10 ký tự; để trống để tạo ngẫu nhiên): ")
        if not first:
            return auth.generate_password(), True
        problem = auth.password_problem(first, login)
        if problem:
            raise CommandError(problem)
        if getpass.getpass("Nhập lại mật khẩu: ") != first:
            raise CommandError("Hai lần nhập mật khẩu không giống nhau.")
        return first, False
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise CommandError("Không đọc được mật khẩu từ đầu vào (hoặc dùng --generate).")
    problem = auth.password_problem(line, login)
    if problem:
        raise CommandError(problem)
    return line, False


def _email(raw: str) -> str:
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as error:
        raise CommandError(f"Email '{raw}' chưa đúng: {error}") from None


def _tree(settings: Settings) -> OrgTree:
    config = settings.config
    if not Path(config).is_file():
        raise CommandError(f"Không tìm thấy tệp kịch bản {config} (đặt LOA_CONFIG hoặc --config).")
    tree = load_org_tree(config, str(Path(config).stat().st_mtime_ns))
    if not tree.nodes:
        raise CommandError(f"{config}: chưa đọc được cây tổ chức (chạy `loa check` để xem lỗi).")
    return tree


async def _find(db: Database, login: str) -> Organiser:
    async with db.reads() as session:
        found = await session.scalar(select(Organiser).where(Organiser.login == login))
    if found is None:
        raise CommandError(f"Không có tài khoản {login}.")
    return found


async def _add(db: Database, args: argparse.Namespace, settings: Settings) -> None:
    login = _email(args.email)
    role = ROLES[args.role]
    tree = _tree(settings)
    if args.org not in tree:
        known = ", ".join(tree.roots()[:8])
        raise CommandError(f"Không có đơn vị '{args.org}' trong {settings.config} (gốc: {known}).")
    units = [u.strip() for u in args.units.split(",") if u.strip()]
    if units and role is not OrganiserRole.REVIEWER:
        raise CommandError("Chỉ người chấm (--role reviewer) mới giới hạn theo --units.")
    inside = tree.subtree(args.org)
    wrong = [u for u in units if u not in inside]
    if wrong:
        raise CommandError(f"Các đơn vị không thuộc {args.org}: {', '.join(wrong)}")
    password, generated = _ask_password(login, args.generate)
    hashed = await auth.hash_password_async(password)
    now = datetime.now(UTC)
    try:
        async with db.sessions() as session, session.begin():
            await auth.create_organiser(
                session, login=login, password_hash=hashed, role=role, org=args.org, now=now,
                name=args.name.strip() or None, units=units, must_change_password=generated,
                created_by="cli",
            )
    except auth.AccountError as error:
        raise CommandError(str(error)) from None
    scope = tree.path(args.org) + (f" (đơn vị: {', '.join(units)})" if units else "")
    print(f"Đã tạo tài khoản {ROLE_NAMES[role]} {login} cho {scope}.")
    if generated:
        print(f"Mật khẩu tạm (chỉ hiện một lần, phải đổi khi đăng nhập): {password}")


async def _list(db: Database, settings: Settings) -> None:
    try:
        tree = _tree(settings)
    except CommandError:
        tree = OrgTree({})
    async with db.reads() as session:
        rows = (await session.scalars(select(Organiser).order_by(Organiser.org, Organiser.login)))
        accounts = rows.all()
    if not accounts:
        print("Chưa có tài khoản nào.")
        return
    for a in accounts:
        state = "" if a.active else "  [đã khóa]"
        units = f" – đơn vị: {', '.join(a.units)}" if a.units else ""
        print(f"{a.login}\t{ROLE_NAMES[a.role]}\t{tree.name(a.org)} ({a.org}){units}{state}")


async def _password(db: Database, args: argparse.Namespace) -> None:
    login = auth.normal_login(args.email)
    organiser = await _find(db, login)
    password, generated = _ask_password(login, args.generate)
    hashed = await auth.hash_password_async(password)
    async with db.sessions() as session, session.begin():
        fresh = await session.get(Organiser, organiser.id)
        assert fresh is not None
        await auth.set_password(session, fresh, hashed, datetime.now(UTC), must_change=generated)
    print(f"Đã đặt mật khẩu mới cho {login}; các phiên đăng nhập cũ đã kết thúc.")
    if generated:
        print(f"Mật khẩu tạm (chỉ hiện một lần, phải đổi khi đăng nhập): {password}")


async def _active(db: Database, args: argparse.Namespace, active: bool) -> None:
    login = auth.normal_login(args.email)
    organiser = await _find(db, login)
    now = datetime.now(UTC)
    async with db.sessions() as session, session.begin():
        fresh = await session.get(Organiser, organiser.id)
        assert fresh is not None
        fresh.active = active
        fresh.updated_at = now
        if not active:  # end its logins now
            await auth.set_password(session, fresh, fresh.password_hash, now,
                                    must_change=fresh.must_change_password)
    print(f"Đã {'mở khóa' if active else 'khóa'} tài khoản {login}.")


async def _run(args: argparse.Namespace, settings: Settings) -> None:
    db = await open_database(settings.database_url)
    try:
        if args.action == "add":
            await _add(db, args, settings)
        elif args.action == "list":
            await _list(db, settings)
        elif args.action == "password":
            await _password(db, args)
        elif args.action in ("disable", "enable"):
            await _active(db, args, args.action == "enable")
    finally:
        await db.close()


def main(args: argparse.Namespace) -> int:
    try:
        settings = load(args)
    except SettingsError as error:
        print(f"Lỗi cấu hình: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_run(args, settings))
    except CommandError as error:
        print(str(error), file=sys.stderr)
        return 1
    return 0


__all__ = ["main"]
