"""Runs named child processes, restarts the ones that die, stops them all in order.

Each child runs in its own session, so a Ctrl-C on the terminal reaches only the
supervisor, which then gives every child exactly one SIGTERM and a grace period to
finish its in-flight jobs before SIGKILL. On Linux the children also get SIGTERM if the
supervisor dies without cleaning up (even by SIGKILL), so it never leaves orphans.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PR_SET_PDEATHSIG = 1

SignalHandler = Callable[[int, FrameType | None], Any] | int | None


@dataclass(frozen=True)
class ChildSpec:
    """What to run: `env` None inherits the supervisor's environment."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None


@dataclass
class _Child:
    spec: ChildSpec
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    fast_exits: int = 0
    restart_at: float = field(default=0.0)


def _die_with_parent() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGTERM the child when the supervisor dies.

    Linux sends it when the thread that forked the child exits, so children are only
    ever forked by the thread that supervises them until the end.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the forked child
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # the supervisor died before the hook ran
            os._exit(1)

    return hook


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _kill_group(pgid: int) -> None:
    """SIGKILL what a child left behind in its session (e.g. a worker's pool processes)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class Supervisor:
    """Keeps `children` running until stopped, then stops them within `grace_seconds`."""

    def __init__(
        self,
        children: list[ChildSpec],
        grace_seconds: float = 20.0,
        on_event: Callable[[str], None] | None = None,
        *,
        restart_delay: float = 1.0,
        max_restart_delay: float = 10.0,
        stable_seconds: float = 30.0,
        poll_seconds: float = 0.2,
    ) -> None:
        names = [spec.name for spec in children]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique: {names}")
        self._children = [_Child(spec) for spec in children]
        self.grace_seconds = grace_seconds
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.stable_seconds = stable_seconds
        self.poll_seconds = poll_seconds
        self._on_event = on_event
        self._preexec = _die_with_parent()
        # Plain flags, not Events: signal handlers must not take locks.
        self._stopping = False
        self._hurry = False
        self._started = False
        self._ready = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._supervisor_ident: int | None = None

    def start(self) -> None:
        """Start the children and supervise them from a background thread."""
        self._claim_start()
        self._thread = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
        self._thread.start()
        self._ready.wait()

    def run(self) -> None:
        """Start the children and supervise them here until a stop signal or `stop()`."""
        self._claim_start()
        previous = self._install_signal_handlers()
        try:
            self._supervise()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def stop(self) -> None:
        """Ask for an orderly stop; from another thread, wait until it is done."""
        self._stopping = True
        if self._started and threading.get_ident() != self._supervisor_ident:
            self._done.wait()

    def pids(self) -> dict[str, int]:
        """The pid of every child currently running, by name."""
        return {
            child.spec.name: child.process.pid
            for child in list(self._children)
            if child.process is not None and child.process.returncode is None
        }

    def _claim_start(self) -> None:
        if self._started:
            raise RuntimeError("a Supervisor can only be started once")
        self._started = True

    def _install_signal_handlers(self) -> dict[int, SignalHandler]:
        if threading.current_thread() is not threading.main_thread():
            return {}  # only the main thread may; `stop()` still works
        return {signum: signal.signal(signum, self._on_signal) for signum in STOP_SIGNALS}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # A second signal during the grace period means: do not wait any longer.
        self._hurry = self._stopping
        self._stopping = True

    def _supervise(self) -> None:
        self._supervisor_ident = threading.get_ident()
        try:
            for child in self._children:
                self._spawn(child)
            self._ready.set()
            while not self._stopping:
                time.sleep(self.poll_seconds)
                self._check_children()
        finally:
            self._ready.set()
            self._shutdown()
            self._done.set()

    def _spawn(self, child: _Child) -> None:
        spec = child.spec
        child.started_at = time.monotonic()
        try:
            child.process = subprocess.Popen(
                spec.argv,
                env=spec.env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=self._preexec,
            )
        except OSError as exc:
            child.process = None
            self._schedule_restart(child, f"failed to start: {exc}")
            return
        self._event(f"started {spec.name} (pid {child.process.pid})")

    def _check_children(self) -> None:
        now = time.monotonic()
        for child in self._children:
            if child.process is None:
                if now >= child.restart_at and not self._stopping:
                    self._spawn(child)
                continue
            code = child.process.poll()
            if code is not None:
                _kill_group(child.process.pid)
                pid, child.process = child.process.pid, None
                self._schedule_restart(child, f"(pid {pid}) {_describe_exit(code)}")

    def _schedule_restart(self, child: _Child, why: str) -> None:
        """Restart soon; back off while it keeps dying fast, forget once it stayed up."""
        if time.monotonic() - child.started_at >= self.stable_seconds:
            child.fast_exits = 0
        delay = min(self.max_restart_delay, self.restart_delay * 2**child.fast_exits)
        child.fast_exits += 1
        child.restart_at = time.monotonic() + delay
        self._event(f"{child.spec.name} {why}; restarting in {delay:.1f} s")

    def _shutdown(self) -> None:
        running = [c for c in self._children if c.process is not None]
        self._event(f"stopping {len(running)} children (grace {self.grace_seconds:.0f} s)")
        for child in running:
            assert child.process is not None
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_seconds
        while running and time.monotonic() < deadline and not self._hurry:
            running = [c for c in running if not self._reaped(c)]
            time.sleep(0.05)
        for child in running:
            self._kill(child)

    def _reaped(self, child: _Child) -> bool:
        assert child.process is not None
        code = child.process.poll()
        if code is None:
            return False
        _kill_group(child.process.pid)
        self._event(f"{child.spec.name} (pid {child.process.pid}) {_describe_exit(code)}")
        return True

    def _kill(self, child: _Child) -> None:
        assert child.process is not None
        if child.process.poll() is None:
            self._event(f"{child.spec.name} (pid {child.process.pid}) still running: SIGKILL")
        _kill_group(child.process.pid)
        child.process.wait()

    def _event(self, message: str) -> None:
        if self._on_event is not None:
            self._on_event(message)
        else:
            logger.info("%s", message)
