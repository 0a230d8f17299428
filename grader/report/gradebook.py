"""The class gradebook: one CSV row per student (student, score, max, then the points earned in each
category, then the grading status), in a shape LMS gradebooks import."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from grader.report.model import RunResult


def categories(runs: Sequence[RunResult]) -> list[str]:
    seen: dict[str, None] = {}
    for run in runs:
        for c in run.checks:
            seen.setdefault(c.category, None)
    return list(seen)


def to_csv(rows: Sequence[tuple[str, RunResult]]) -> str:
    """``rows`` are (student, result) pairs, written in that order."""
    cats = categories([run for _, run in rows])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["student", "score", "max", *cats, "status"])
    for student, run in rows:
        by_cat = {cat: 0.0 for cat in cats}
        for c in run.checks:
            by_cat[c.category] += c.score
        writer.writerow([student, f"{run.score:g}", f"{run.max_score:g}", *(f"{by_cat[k]:g}" for k in cats),
                         run.status])
    return out.getvalue()
