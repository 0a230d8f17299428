"""The results of a grading run, as plain frozen data that every report format renders."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OUTCOMES = ("passed", "failed", "error", "skipped")


@dataclass(frozen=True)
class CheckResult:
    """The verdict on one check."""

    id: str
    title: str
    category: str
    points: float
    visibility: str
    outcome: str
    message: str
    hint: str
    transcript: str
    duration_s: float
    seed: int

    @property
    def score(self) -> float:
        return self.points if self.outcome == "passed" else 0.0


@dataclass(frozen=True)
class RunResult:
    """The verdicts on one submission against one spec."""

    lab: str
    title: str
    submission: str
    checks: tuple[CheckResult, ...]
    duration_s: float
    seed: int
    status: str  # graded | build-failed | start-failed
    status_message: str = ""
    status_output: str = ""

    @property
    def score(self) -> float:
        return sum(c.score for c in self.checks)

    @property
    def max_score(self) -> float:
        return sum(c.points for c in self.checks)

    def count(self, outcome: str) -> int:
        return sum(1 for c in self.checks if c.outcome == outcome)

    @property
    def exit_code(self) -> int:
        """0 all passed, 1 a check failed or errored, 3 the submission did not build or start."""
        if self.status != "graded":
            return 3
        if any(c.outcome in ("failed", "error") for c in self.checks):
            return 1
        return 0


def to_plain(run: RunResult) -> dict[str, Any]:
    """The result as plain data (JSON-able), for crossing a process, container or queue boundary."""
    return dataclasses.asdict(run)


def from_plain(data: Mapping[str, Any]) -> RunResult:
    """The inverse of :func:`to_plain`; ValueError for data that is not a result."""
    try:
        checks = tuple(CheckResult(**c) for c in data["checks"])
        fields = {f.name for f in dataclasses.fields(RunResult)} - {"checks"}
        return RunResult(checks=checks, **{k: data[k] for k in fields if k in data})
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a grading result: {exc}") from exc
