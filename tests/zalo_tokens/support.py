"""Shared by the token keeper tests and their worker processes."""

from __future__ import annotations

from tests.fakes.zalo_api import TOKEN_PATH, FakeZaloApi

OA = "2222222222222222222"
DISTRICT = "tan-phu"


def refresh_calls(zalo: FakeZaloApi) -> int:
    """Refresh requests the fake OAuth server received (refused ones included)."""
    return sum(
        1
        for r in zalo.requests
        if r.path == TOKEN_PATH
        and isinstance(r.body, dict)
        and r.body.get("grant_type") == "refresh_token"
    )
