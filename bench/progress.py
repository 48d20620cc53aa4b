"""The progress bar shown while the benchmark runs (rich), one step per measured run."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichProgress


class Progress:
    """Counts steps across all scenarios; `step(label)` starts the next one."""

    def __init__(self, total: int, console: Console, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled
        self._bar = RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            disable=not enabled,
        )
        self._task = self._bar.add_task("starting", total=total)
        self._started = False

    def step(self, label: str) -> None:
        if self._started:
            self._bar.advance(self._task)
        self._started = True
        self._bar.update(self._task, description=label)

    def log(self, line: str) -> None:
        self._bar.console.print(line, highlight=False)

    def __enter__(self) -> Progress:
        self._bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._started and exc is None:
            self._bar.advance(self._task)
            self._bar.update(self._task, description="done")
        self._bar.stop()
