"""A figure: one measured number beside its baseline from the same run, and its target."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Figure:
    """`value` of inferq next to `baseline_value` of `baseline`; `met` says whether the
    issue's target holds (None when no target applies or a number is missing)."""

    scenario: str
    name: str
    unit: str
    value: float | None
    baseline: str = ""
    baseline_value: float | None = None
    target: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline_value:
            return None
        return round(self.value / self.baseline_value, 3)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def check(value: float | None, test: Callable[[float], bool]) -> bool | None:
    """`test(value)`, or None when the value is missing."""
    return None if value is None else bool(test(value))


@dataclass
class ScenarioResult:
    """What a scenario hands to the report."""

    name: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "seconds": round(self.seconds, 1),
            "figures": [f.as_dict() for f in self.figures],
            "runs": self.runs,
            "series": self.series,
            "notes": self.notes,
        }


def diff(a: float | None, b: float | None) -> float | None:
    """a - b, rounded to 0.01, None when either is missing."""
    return None if a is None or b is None else round(a - b, 2)


__all__ = ["Figure", "ScenarioResult", "check", "diff"]
