"""What the tests need from the machine, and what happens when it is missing: on a developer's
machine the tests that need it are skipped with the reason; in CI (`CI` or `LOA_REQUIRE_REDIS`
set, as `.ci/run` does) they fail, so a green CI always ran everything."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

STRICT = bool(os.environ.get("CI") or os.environ.get("LOA_REQUIRE_REDIS"))

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; no tool may download a browser
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def missing(reason: str) -> NoReturn:
    """Skip (here) or fail (in CI) the module or test that needs what is missing."""
    if STRICT:
        pytest.fail(f"{reason} (CI must provide it)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_chromium() -> None:
    """At module level, before importing playwright."""
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} is missing: apt-get install -y chromium")
