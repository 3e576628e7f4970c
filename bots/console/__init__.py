"""The organiser console (mounted at /admin): accounts, access per organisation subtree,
login, audit log, the evidence review queue and hand-over. See docs/bang-dieu-khien.md.

    deps = ConsoleDeps(db=..., files=..., flows=lambda: runtime.flows.compiled,
                       tree=lambda: load_org_tree(config, runtime.version),
                       notify=runtime.pipeline.ingest, send=...)
    mount_console(app, deps)                      # /admin/…
    await console_tick(deps)                      # about once a minute
    password = await ensure_first_admin(db, bundle)   # print once at start-up

Submodules import lazily here so `loa organiser` stays quick to start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bots.console.app import ConsoleDeps, console_tick, create_console_app, mount_console
    from bots.console.auth import FIRST_ADMIN_LOGIN, ensure_first_admin
    from bots.console.handover import release_stale_handovers
    from bots.console.review import dispatch_reviews
    from bots.console.tree import OrgTree, load_org_tree

_EXPORTS = {
    "ConsoleDeps": "bots.console.app",
    "console_tick": "bots.console.app",
    "create_console_app": "bots.console.app",
    "mount_console": "bots.console.app",
    "FIRST_ADMIN_LOGIN": "bots.console.auth",
    "ensure_first_admin": "bots.console.auth",
    "release_stale_handovers": "bots.console.handover",
    "dispatch_reviews": "bots.console.review",
    "OrgTree": "bots.console.tree",
    "load_org_tree": "bots.console.tree",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bots.console' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module), name)


__all__ = [
    "FIRST_ADMIN_LOGIN",
    "ConsoleDeps",
    "OrgTree",
    "console_tick",
    "create_console_app",
    "dispatch_reviews",
    "ensure_first_admin",
    "load_org_tree",
    "mount_console",
    "release_stale_handovers",
]
