"""The process supervisor of `inferq serve`, driving real child processes."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psutil
import pytest

from inferq.supervisor import ChildSpec, Supervisor

T = TypeVar("T")

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def stubborn(ready: Path) -> list[str]:
    """A child that ignores SIGTERM, and says when it started ignoring it."""
    code = (
        "import signal, sys, time; from pathlib import Path; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); Path(sys.argv[1]).touch(); time.sleep(60)"
    )
    return [sys.executable, "-c", code, str(ready)]


class Events:
    """Collects supervisor events with the time they happened."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str]] = []

    def __call__(self, message: str) -> None:
        self.seen.append((time.monotonic(), message))

    def matching(self, pattern: str) -> list[tuple[float, str]]:
        return [(t, m) for t, m in self.seen if re.search(pattern, m)]


@pytest.fixture
def supervisors() -> Iterator[Callable[..., Supervisor]]:
    """Builds started in-process supervisors and always stops them."""
    started: list[Supervisor] = []

    def make(children: list[ChildSpec], **options: object) -> Supervisor:
        supervisor = Supervisor(children, **options)  # type: ignore[arg-type]
        supervisor.start()
        started.append(supervisor)
        return supervisor

    yield make
    for supervisor in started:
        supervisor.stop()


def test_start_runs_every_child_and_reports_its_pid(
    supervisors: Callable[..., Supervisor],
) -> None:
    supervisor = supervisors([ChildSpec("a", SLEEPER), ChildSpec("b", SLEEPER)])

    pids = supervisor.pids()

    assert set(pids) == {"a", "b"}
    assert all(psutil.Process(pid).ppid() == os.getpid() for pid in pids.values())


def test_children_run_in_their_own_session_with_the_given_environment(
    supervisors: Callable[..., Supervisor], tmp_path: Path
) -> None:
    out = tmp_path / "env.txt"
    code = "import os, sys; open(sys.argv[1], 'w').write(os.environ['MARK'])"
    supervisor = supervisors(
        [ChildSpec("env", [sys.executable, "-c", code, str(out)], {"MARK": "set"}),
         ChildSpec("sleeper", SLEEPER)],
    )  # fmt: skip

    assert os.getsid(supervisor.pids()["sleeper"]) == supervisor.pids()["sleeper"]
    until(lambda: out.exists() and out.read_text() == "set")


def test_child_killed_with_sigkill_is_restarted_within_seconds(
    supervisors: Callable[..., Supervisor],
) -> None:
    events = Events()
    supervisor = supervisors([ChildSpec("worker", SLEEPER)], on_event=events)
    victim = supervisor.pids()["worker"]

    os.kill(victim, signal.SIGKILL)
    replacement = until(lambda: supervisor.pids().get("worker", victim) != victim, timeout=3.0)

    assert replacement
    assert events.matching(rf"worker \(pid {victim}\) killed by SIGKILL; restarting in 1\.0 s")


def test_crash_looping_child_backs_off_up_to_the_cap(
    supervisors: Callable[..., Supervisor],
) -> None:
    events = Events()
    crasher = ChildSpec("crasher", [sys.executable, "-c", "raise SystemExit(3)"])
    supervisors(
        [crasher], on_event=events, restart_delay=0.2, max_restart_delay=0.8, poll_seconds=0.05
    )

    until(lambda: len(events.matching("restarting")) >= 5, timeout=10.0)

    delays = [re.findall(r"in ([\d.]+) s", m)[0] for _, m in events.matching("restarting")[:5]]
    assert delays == ["0.2", "0.4", "0.8", "0.8", "0.8"]
    assert "exited with code 3" in events.matching("restarting")[0][1]
    starts = [t for t, _ in events.matching("^started crasher")]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[0] < gaps[1] < gaps[2]


def test_backoff_resets_once_a_child_stayed_up(supervisors: Callable[..., Supervisor]) -> None:
    events = Events()
    short_lived = ChildSpec("short", [sys.executable, "-c", "import time; time.sleep(0.5)"])
    supervisors(
        [short_lived], on_event=events, restart_delay=0.1, stable_seconds=0.3, poll_seconds=0.05
    )

    until(lambda: len(events.matching("restarting")) >= 3, timeout=10.0)

    assert all("restarting in 0.1 s" in m for _, m in events.matching("restarting"))


def test_stop_terminates_every_child_and_returns_promptly(
    supervisors: Callable[..., Supervisor],
) -> None:
    supervisor = supervisors([ChildSpec("a", SLEEPER), ChildSpec("b", SLEEPER)])
    pids = list(supervisor.pids().values())

    began = time.monotonic()
    supervisor.stop()

    assert time.monotonic() - began < 2.0
    assert not any(alive(pid) for pid in pids)
    assert supervisor.pids() == {}


def test_child_ignoring_sigterm_is_killed_after_the_grace(
    supervisors: Callable[..., Supervisor], tmp_path: Path
) -> None:
    events = Events()
    ready = tmp_path / "ready"
    supervisor = supervisors(
        [ChildSpec("stubborn", stubborn(ready))], grace_seconds=1.0, on_event=events
    )
    until(ready.exists)
    pid = supervisor.pids()["stubborn"]

    began = time.monotonic()
    supervisor.stop()

    assert 1.0 <= time.monotonic() - began < 3.0
    assert not alive(pid)
    assert events.matching(rf"stubborn \(pid {pid}\) still running: SIGKILL")


def test_what_a_dead_child_left_in_its_session_is_killed(
    supervisors: Callable[..., Supervisor], tmp_path: Path
) -> None:
    grandchild_pid = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen(['sleep', '60']); open(sys.argv[1], 'w').write(str(p.pid)); "
        "time.sleep(60)"
    )
    parent = ChildSpec("parent", [sys.executable, "-c", code, str(grandchild_pid)])
    supervisor = supervisors([parent])
    until(lambda: grandchild_pid.exists() and grandchild_pid.read_text())
    grandchild = int(grandchild_pid.read_text())

    os.kill(supervisor.pids()["parent"], signal.SIGKILL)

    until(lambda: not alive(grandchild), timeout=3.0)


# A supervisor in its own process, as `inferq serve` runs it.
SUPERVISOR_MAIN = """
import json, sys
from inferq.supervisor import ChildSpec, Supervisor
argvs = json.loads(sys.argv[2])
children = [ChildSpec(f"child-{i}", argv) for i, argv in enumerate(argvs)]
Supervisor(children, float(sys.argv[1]), on_event=lambda m: print(m, flush=True)).run()
print("supervisor returned", flush=True)
"""


class SupervisorProcess:
    def __init__(self, tmp_path: Path, children: list[list[str]], grace: float) -> None:
        self.out = tmp_path / "supervisor.out"
        with self.out.open("w") as out:
            # Own session, so a signal to its process group reaches nothing of pytest's.
            self.process = subprocess.Popen(
                [sys.executable, "-c", SUPERVISOR_MAIN, str(grace), json.dumps(children)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.count = len(children)

    def children(self) -> list[int]:
        """Their pids, once all of them run."""
        until(lambda: len(self._live_children()) == self.count)
        return self._live_children()

    def _live_children(self) -> list[int]:
        return [c.pid for c in psutil.Process(self.process.pid).children()]

    def output(self) -> str:
        return self.out.read_text()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def supervisor_process(tmp_path: Path) -> Iterator[Callable[..., SupervisorProcess]]:
    made: list[SupervisorProcess] = []

    def make(children: list[list[str]], grace: float = 5.0) -> SupervisorProcess:
        made.append(SupervisorProcess(tmp_path, children, grace))
        return made[-1]

    yield make
    for process in made:
        process.close()


def test_sigterm_to_the_supervisor_stops_all_its_children_within_the_grace(
    supervisor_process: Callable[..., SupervisorProcess],
) -> None:
    supervisor = supervisor_process([SLEEPER, SLEEPER])
    pids = supervisor.children()

    supervisor.process.send_signal(signal.SIGTERM)

    assert supervisor.process.wait(timeout=5.0) == 0
    assert "supervisor returned" in supervisor.output()
    assert not any(alive(pid) for pid in pids)


def test_ctrl_c_gives_each_child_exactly_one_sigterm(
    supervisor_process: Callable[..., SupervisorProcess], tmp_path: Path
) -> None:
    received = tmp_path / "signals.txt"
    code = (
        "import signal, sys, time; from pathlib import Path; log = Path(sys.argv[1]);\n"
        "def note(signum, frame):\n"
        "    with log.open('a') as f: f.write(signal.Signals(signum).name + '\\n')\n"
        "    if signum == signal.SIGTERM: sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, note); signal.signal(signal.SIGINT, note)\n"
        "log.touch(); time.sleep(60)\n"
    )
    supervisor = supervisor_process([[sys.executable, "-c", code, str(received)]])
    supervisor.children()
    until(received.exists)

    os.killpg(supervisor.process.pid, signal.SIGINT)  # what the terminal does on Ctrl-C

    assert supervisor.process.wait(timeout=5.0) == 0
    assert received.read_text() == "SIGTERM\n"


def test_second_signal_skips_the_rest_of_the_grace(
    supervisor_process: Callable[..., SupervisorProcess], tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    supervisor = supervisor_process([stubborn(ready)], grace=30.0)
    [pid] = supervisor.children()
    until(ready.exists)

    supervisor.process.send_signal(signal.SIGTERM)
    until(lambda: "stopping" in supervisor.output())
    supervisor.process.send_signal(signal.SIGTERM)

    assert supervisor.process.wait(timeout=5.0) == 0
    assert not alive(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
def test_supervisor_killed_with_sigkill_leaves_no_orphans(
    supervisor_process: Callable[..., SupervisorProcess],
) -> None:
    supervisor = supervisor_process([SLEEPER, SLEEPER])
    pids = supervisor.children()

    supervisor.process.kill()
    supervisor.process.wait()

    until(lambda: not any(alive(pid) for pid in pids), timeout=3.0)


def alive(pid: int) -> bool:
    """Running, and not merely a zombie waiting for a reaper (containers may lack one)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def until(condition: Callable[[], T], timeout: float = 5.0) -> T:
    """Poll `condition` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
