"""Queue fixtures: an isolated queue (SQLite file or a uniquely named Redis queue) per test."""

from __future__ import annotations

import os
import uuid

import pytest

from tests.support import require

REDIS_URL = os.environ.get("PNEUMOSCAN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_available() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(params=["sqlite", "redis"])
def queue_env(request, tmp_path) -> dict[str, str]:
    """Settings for one test's queue and job folders; Redis tests need a server on REDIS_URL."""
    env = {
        "PNEUMOSCAN_DATA_DIR": str(tmp_path / "var"),
        "PNEUMOSCAN_SHARD_SIZE": "4",
        "PNEUMOSCAN_QUEUE_NAME": f"test-{uuid.uuid4().hex[:12]}",
    }
    if request.param == "redis":
        require("PNEUMOSCAN_REQUIRE_REDIS", None if redis_available() else f"no Redis answers at {REDIS_URL}")
        env["PNEUMOSCAN_QUEUE_URL"] = REDIS_URL
    yield env
    if request.param == "redis":
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"huey.*.{env['PNEUMOSCAN_QUEUE_NAME'].replace('-', '')}"):
            client.delete(key)
