"""Processes the benchmark starts, and what they cost: CPU seconds and memory over time.

Everything shares the machine's cores, so every figure comes with the CPU each process
(its children included: LiteLLM's and Celery's workers) used while it was measured.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    """A started process and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tree(self) -> list[psutil.Process]:
        """The process and its living descendants."""
        try:
            root = psutil.Process(self.popen.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class Fleet:
    """Starts processes with logs under `root` and stops them all, newest first."""

    root: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None,
              cwd: Path | None = None) -> Proc:
        log = self.root / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                list(argv), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def python(self, name: str, *args: str, env: dict[str, str] | None = None,
               cwd: Path | None = None) -> Proc:
        return self.start(name, [sys.executable, *args], env=env, cwd=cwd)

    def stop(self, proc: Proc, grace: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL it after `grace` seconds."""
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGTERM)
            try:
                proc.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(timeout=5)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self, grace: float = 5.0) -> None:
        """SIGTERM every process group at once, SIGKILL what is left after `grace`."""
        for proc in self.procs:
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in reversed(list(self.procs)):
            self.stop(proc, grace=max(0.1, deadline - time.monotonic()))


def wait_http(url: str, proc: Proc, timeout: float = 60.0) -> None:
    """Wait until `url` answers below 500, or raise with the process's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited:\n{proc.log_tail()}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name} did not answer {url} in {timeout:.0f} s:\n{proc.log_tail()}")


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for p in processes:
        with contextlib.suppress(psutil.Error):
            times = p.cpu_times()
            total += times.user + times.system
    return total


def _rss(processes: list[psutil.Process]) -> int:
    total = 0
    for p in processes:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


class Meter:
    """CPU seconds used by named processes over a stretch of time (`with meter:`).

    Each name maps to a callable giving that process tree now, so children started
    after the meter (LiteLLM's workers) are counted too.
    """

    def __init__(self, trees: dict[str, Callable[[], list[psutil.Process]]]) -> None:
        self.trees = trees
        self.cpu: dict[str, float] = {}
        self._start: dict[str, float] = {}
        self._wall = 0.0
        self.wall = 0.0

    def __enter__(self) -> Meter:
        self._start = {name: _cpu_seconds(tree()) for name, tree in self.trees.items()}
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = {
            name: round(_cpu_seconds(tree()) - self._start[name], 3)
            for name, tree in self.trees.items()
        }

    def utilisation(self) -> dict[str, float]:
        """Each process's CPU use as a fraction of one core over the measured time."""
        return {name: round(s / self.wall, 3) if self.wall else 0.0 for name, s in self.cpu.items()}


def self_tree() -> list[psutil.Process]:
    """The benchmark's own process (the load generator runs in it)."""
    return [psutil.Process()]


@dataclass
class Series:
    """Samples over time of RSS (bytes) per process, and of extra gauges."""

    t: list[float] = field(default_factory=list)
    rss: dict[str, list[int]] = field(default_factory=dict)
    gauges: dict[str, list[float]] = field(default_factory=dict)


@contextlib.contextmanager
def sampling(trees: dict[str, Callable[[], list[psutil.Process]]],
             gauges: dict[str, Callable[[], float]] | None = None,
             interval: float = 0.5) -> Iterator[Series]:
    """Sample RSS of each process tree and each gauge every `interval` in a thread."""
    series = Series(rss={n: [] for n in trees}, gauges={n: [] for n in gauges or {}})
    stop = threading.Event()
    start = time.perf_counter()

    def run() -> None:
        while not stop.is_set():
            series.t.append(round(time.perf_counter() - start, 3))
            for name, tree in trees.items():
                series.rss[name].append(_rss(tree()))
            for name, gauge in (gauges or {}).items():
                try:
                    series.gauges[name].append(float(gauge()))
                except Exception:
                    series.gauges[name].append(float("nan"))
            stop.wait(interval)

    thread = threading.Thread(target=run, name="bench-sampler", daemon=True)
    thread.start()
    try:
        yield series
    finally:
        stop.set()
        thread.join(timeout=5)


__all__ = ["Fleet", "Meter", "Proc", "Series", "free_port", "sampling", "self_tree", "wait_http"]
