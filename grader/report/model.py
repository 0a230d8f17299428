"""The results of a grading run, as plain frozen data that every report format renders."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OUTCOMES = ("passed", "failed", "error", "skipped")


@dataclass(frozen=True)
class Differential:
    """A failed check beside the same probe (same seed, same fragments) run against the reference program."""

    reference: str  # the reference program's folder
    reference_outcome: str  # passed | failed | error: how the reference fared on the same probe
    summary: str  # one line: "reference sent `…`, yours sent `…`"
    text: str  # both exchanges, one above the other, the first differing byte marked
    connection: str = ""  # where they part: the connection's label
    direction: str = ""  # "program" (bytes the programs sent) or "grader" (bytes they let the grader send)
    offset: int | None = None  # the first differing byte on that connection and direction
    reference_bytes: str = ""  # escaped, trimmed: the reference's bytes around it
    yours_bytes: str = ""  # escaped, trimmed: the submission's bytes around it


@dataclass(frozen=True)
class Smallest:
    """The smallest variation of a failed check's fault injection that still fails it."""

    summary: str  # in words: "fails when the request arrives in 2 pieces split after byte 17 (…)"
    trials: int  # how many variations were run to find it
    pieces: tuple[str, ...] = ()  # the fragments, escaped and trimmed (for a split request)
    short_io: str = ""  # the schedule, for a check with short reads/writes


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
    differential: Differential | None = None
    smallest: Smallest | None = None
    pcap: str = ""  # a packet capture of the check's traffic (grader check --pcap DIR)
    events: tuple[WireEvent, ...] = ()

    @property
    def score(self) -> float:
        return self.points if self.outcome == "passed" else 0.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CheckResult:
        """The inverse of the JSON report's entry for a check (grader.report.jsonout), its feedback included."""
        return check_from_plain(d)


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
        return from_plain({"title": d.get("lab", ""), **d})

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
    """The inverse of :func:`to_plain` and of the JSON report (whose derived keys, the scores, are left out);
    ValueError for data that is not a result."""
    try:
        checks = tuple(check_from_plain(c) for c in data["checks"])
        return RunResult(checks=checks, **_known(RunResult, data, skip="checks"))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a grading result: {exc}") from exc


def check_from_plain(data: Mapping[str, Any]) -> CheckResult:
    """One check's verdict from :func:`dataclasses.asdict` data or the JSON report's entry (its feedback and
    events included; keys the result does not have, such as a report's derived ones, left out)."""
    fields = _known(CheckResult, data)
    if isinstance(fields.get("differential"), Mapping):
        fields["differential"] = Differential(**_known(Differential, fields["differential"]))
    if isinstance(fields.get("smallest"), Mapping):
        smallest = _known(Smallest, fields["smallest"])
        smallest["pieces"] = tuple(smallest.get("pieces", ()))
        fields["smallest"] = Smallest(**smallest)
    fields["events"] = tuple(WireEvent.from_dict(e) if isinstance(e, Mapping) else e for e in fields.get("events", ()))
    return CheckResult(**fields)


def _known(cls: type, data: Mapping[str, Any], skip: str = "") -> dict[str, Any]:
    """The entries of ``data`` that are fields of the dataclass ``cls`` (but ``skip``)."""
    names = {f.name for f in dataclasses.fields(cls)} - {skip}
    return {k: v for k, v in data.items() if k in names}
