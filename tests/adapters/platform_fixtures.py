"""The real-shaped webhook bodies (`tests/fixtures/`, copied from `../shared/fixtures/`) and
their signed headers, for the adapter tests."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def fixtures_dir() -> Path:
    for candidate in (
        os.environ.get("LOA_FIXTURES"),
        REPO / "tests" / "fixtures",
        REPO.parent / "shared" / "fixtures",
    ):
        if candidate and (Path(candidate) / "signatures.json").is_file():
            return Path(candidate)
    pytest.fail("webhook fixtures not found (they ship in tests/fixtures; or set LOA_FIXTURES)")


def raw(name: str) -> bytes:
    return (fixtures_dir() / name).read_bytes()


def event(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(raw(name))
    return data


def header(name: str) -> dict[str, str]:
    signatures = json.loads((fixtures_dir() / "signatures.json").read_text("utf-8"))
    headers: dict[str, str] = signatures["headers"][name]
    return headers
