"""The class report: one self-contained HTML file (no network assets) with a matrix of students x checks,
each check's failure rate across the class, and, for each cell, the failure's message, hint and transcript
drawn as a sequence diagram of the exchange between the grader and the submission (who sent what, when,
and how the connection ended)."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

from grader.report.model import RunResult


def _data(title: str, lab: str, rows: Sequence[tuple[str, RunResult]]) -> dict[str, Any]:
    checks: dict[str, dict[str, Any]] = {}
    for _, run in rows:
        for c in run.checks:
            checks.setdefault(c.id, {"id": c.id, "title": c.title, "category": c.category, "points": c.points,
                                     "visibility": c.visibility})
    students = []
    for student, run in rows:
        cells: dict[str, Any] = {}
        for c in run.checks:
            cell: dict[str, Any] = {"o": c.outcome}
            if c.outcome != "passed":
                cell.update(message=c.message, hint=c.hint, transcript=c.transcript,
                            events=[e.to_dict() for e in c.events], seed=c.seed)
            cells[c.id] = cell
        students.append({"name": student, "score": run.score, "max": run.max_score, "status": run.status,
                         "status_message": run.status_message, "cells": cells})
    return {"title": title, "lab": lab, "checks": list(checks.values()), "students": students}


def _asset(name: str) -> str:
    return resources.files("grader.report").joinpath("classreport", name).read_text("utf-8")


def to_html(title: str, lab: str, rows: Sequence[tuple[str, RunResult]]) -> str:
    """The page, with its style, script and data inlined (the data as JSON, every ``<`` escaped)."""
    data = json.dumps(_data(title, lab, rows), ensure_ascii=True).replace("<", "\\u003c")
    return (_asset("page.html").replace("{{TITLE}}", html.escape(f"{title} ({lab}): class report"))
            .replace("{{CSS}}", _asset("style.css")).replace("{{JS}}", _asset("app.js")).replace("{{DATA}}", data))
