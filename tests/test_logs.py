"""The review log line stays one bounded JSON line, whatever the request carried."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from webhook.logs import ERROR_LIMIT, FIELD_LIMIT, TRACEBACK_LIMIT, JsonLog


def test_huge_fields_are_cut_and_say_how_much(tmp_path: Path) -> None:
    path = tmp_path / "log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        JsonLog("info", fd=fd).review(
            uid="u" * 10_000,
            namespace="shop",
            name="n" * 3_000_000,
            owner_kind="ReplicaSet",
            owner_name="o" * 1_000,
            operation="CREATE",
            outcome="error",
            features=(),
            warnings=0,
            duration_ms=1.0,
            status=500,
            error="e" * 50_000,
            traceback="t" * 50_000,
        )
    finally:
        os.close(fd)
    data = path.read_bytes()
    assert data.count(b"\n") == 1
    line = orjson.loads(data)
    assert len(line["name"]) < FIELD_LIMIT + 32
    assert line["name"].endswith(f"...[{3_000_000 - FIELD_LIMIT} more]")
    assert len(line["uid"]) < FIELD_LIMIT + 32
    assert len(line["error"]) < ERROR_LIMIT + 32
    assert len(line["traceback"]) < TRACEBACK_LIMIT + 32
    assert line["namespace"] == "shop"
    assert len(data) < 16_000
