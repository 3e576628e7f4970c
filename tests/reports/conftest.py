"""Reports fixtures: a migrated records database on SQLite (in tmp_path) and, when
127.0.0.1:5432 answers, on a PostgreSQL database created for the test and dropped after (only
that one); and a small deployment whose figures the tests work out by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.compiler import CompiledBundle, compile_bundle
from flows.schema import Bundle
from tests.databases import (  # fixtures this folder uses
    database_url,  # noqa: F401
    db,  # noqa: F401
)

KEY = b"reports-test-key-0123456789abcdef"

# A province with two districts (one declaring its own member count and a percent quota) and a
# Sốp Cộp-like district with two communes. Quotas: p1 50% of 4 = 2; p2 50% of 3 = 1.5 → 2;
# p3 40% of 5 = 2; t1 100% of 2 = 2; quan-a 14 members, quota 8; quan-b declares 10 and 30% → 3.
DEPLOYMENT = """
organisations:
  tinh:
    name: Tỉnh đoàn Mẫu
    children:
      quan-a:
        name: Quận Đoàn A
        channels: {webchat: {}}
        children:
          p1: {name: Đoàn phường 1, area: Khối phường, members: 4, quota: 50%}
          p2: {name: Đoàn phường 2, area: Khối phường, members: 3, quota: 50%}
          p3: {name: Đoàn phường 3, area: Khối phường, members: 5, quota: 40%}
          t1: {name: Đoàn trường 1, area: Khối trường học, members: 2, quota: 100%}
      quan-b:
        name: Quận Đoàn B
        members: 10
        quota: 30%
        channels: {webchat: {}}
        children:
          b1: {name: Đoàn phường B1, area: Khối phường, members: 6, quota: 3}
  sc:
    name: Huyện đoàn SC
    channels: {webchat: {}}
    children:
      x1: {name: Đoàn xã 1, area: Khối xã}
      x2: {name: Đoàn xã 2, area: Khối xã}

campaigns:
  thu_thach:
    title: Thử thách mẫu
    waves:
      - {name: Đợt 1, from: 2023-08-07, to: 2023-09-14}
      - {name: Đợt 2, from: 2023-09-15, to: 2023-10-15}
  vneid:
    title: Hướng dẫn VNeID mẫu
    waves:
      - {name: Đợt 1, from: 2023-04-21, to: 2023-05-12}
      - {name: Đợt 2, from: 2023-05-13, to: 2023-06-20}

flows:
  dang_ky:
    title: Đăng ký
    steps:
      - ask: Bạn đồng ý cho lưu thông tin chứ?
        expect: yes_no
        save: dong_y
      - ask: Họ tên?
        save: ho_ten
      - ask: Đơn vị?
        expect: unit
        save: don_vi
      - end: Cảm ơn {ho_ten}.
"""


@pytest.fixture(scope="session")
def compiled() -> CompiledBundle:
    return compile_bundle(Bundle.model_validate(yaml.safe_load(DEPLOYMENT)), Path("."))
