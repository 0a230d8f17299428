"""The results of a grading run, as plain frozen data that every report format renders."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OUTCOMES = ("passed", "failed", "error", "skipped")


@dataclass(frozen=True)
class WireEvent:
    """One event of a check's transcript as structured data (for the class report's sequence diagrams):
    ``kind`` is ``sent`` (grader to submission), ``received`` (submission to grader) or ``note``; ``label``
    names the connection; ``size`` is the byte count of a sent/received event; ``text`` is the escaped,
    trimmed bytes or the note."""

    at: float
    kind: str
    label: str
    size: int
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "kind": self.kind, "label": self.label, "size": self.size, "text": self.text}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WireEvent:
        return cls(float(d["at"]), str(d["kind"]), str(d["label"]), int(d["size"]), str(d["text"]))


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
    events: tuple[WireEvent, ...] = ()

    @property
    def score(self) -> float:
        return self.points if self.outcome == "passed" else 0.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CheckResult:
        """The inverse of the JSON report's entry for a check (grader.report.jsonout)."""
        return cls(str(d["id"]), str(d["title"]), str(d["category"]), float(d["points"]), str(d["visibility"]),
                   str(d["outcome"]), str(d["message"]), str(d["hint"]), str(d["transcript"]),
                   float(d["duration_s"]), int(d["seed"]),
                   tuple(WireEvent.from_dict(e) for e in d.get("events", ())))


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

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunResult:
        """The inverse of grader.report.jsonout.to_dict: a JSON report read back into the same result."""
        return cls(str(d["lab"]), str(d.get("title", d["lab"])), str(d["submission"]),
                   tuple(CheckResult.from_dict(c) for c in d["checks"]), float(d["duration_s"]), int(d["seed"]),
                   str(d["status"]), str(d.get("status_message", "")), str(d.get("status_output", "")))

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
