"""grader selftest reports which checks each run failed when they change between runs, and counts the flips."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from grader import catalog
from grader.selftest import Subject, Totals, Verdicts, _report
from grader.spec.loader import load_spec


def verdicts(runs: list[dict[str, str]], expected: set[str], name: str = "fixture") -> Verdicts:
    v = Verdicts(Subject(name, Path("."), frozenset(expected)))
    v.runs = runs
    v.statuses = ["graded"] * len(runs)
    return v


def test_flip_report_names_the_failing_checks_of_each_run() -> None:
    v = verdicts([{"a": "failed", "b": "passed"}, {"a": "failed", "b": "failed"}, {"a": "failed", "b": "passed"}],
                 {"a"})
    assert v.flip_report() == "run 1 fails a; run 2 fails a, b; run 3 fails a (flipped: b)"
    steady = verdicts([{"a": "failed", "b": "passed"}] * 3, {"a"})
    assert steady.flip_report() == ""
    other_way = verdicts([{"a": "failed"}, {"a": "error"}], {"a"})
    assert other_way.flip_report() == "a: failed error"


def test_report_and_totals() -> None:
    spec = load_spec(catalog.resolve("tcp-echo-server"))
    ids = [c.id for c in spec.checks]
    ref = verdicts([dict.fromkeys(ids, "passed")] * 2, set(), "reference")
    buggy = verdicts([dict.fromkeys(ids, "failed"), {**dict.fromkeys(ids, "failed"), "echo-line": "passed"}],
                     set(ids), "buggy")
    out = io.StringIO()
    ok = _report(spec, [ref.subject, buggy.subject], {"reference": ref, "buggy": buggy}, 2,
                 Console(file=out, width=200))
    assert not ok
    assert "buggy: verdicts changed between runs: run 1 fails" in out.getvalue()
    assert "(flipped: echo-line)" in out.getvalue()
    totals = Totals()
    totals.add(ref)
    totals.add(buggy)
    assert (totals.gradings, totals.verdicts, totals.flipped_programs, totals.flipped_checks) == (
        4, 4 * len(ids), 1, 1)
    assert "1 check verdict(s) flipped in 1 program(s)" in totals.describe()
