"""Results in the formats of grading platforms, one submission at a time.

* Gradescope's autograder ``results.json`` (its "Autograder Specifications": a top-level score, and tests
  with name, score, max_score, status, output, tags and visibility). A hidden check is
  ``after_published``: students see it once the instructor publishes the grades.
* PrairieLearn's external-grader ``results.json`` (its "External Grading" page: ``gradable``, a score from 0
  to 1, and tests with name, description, points, max_points, message, output). A submission that did not
  build or holds nothing to grade is ``gradable: false`` with ``format_errors``, so the student loses no
  attempt on it.

Both are validated against the JSON Schemas in ``grader/report/schemas/`` (written from those pages).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema

from grader.report.model import CheckResult, RunResult

MAX_OUTPUT = 8000  # characters of one test's output: PrairieLearn caps the whole file at 1 MB
GRADABLE_STATUSES = ("graded", "start-failed")


def _trim(text: str, limit: int = MAX_OUTPUT) -> str:
    return text if len(text) <= limit else text[: limit - 40] + f"\n… [{len(text) - limit + 40} more characters]"


def _details(c: CheckResult, with_hint: bool = True) -> str:
    if c.outcome == "passed":
        return "passed"
    parts = [c.message]
    if with_hint and c.hint:
        parts.append("Hint: " + c.hint)
    if c.transcript:
        parts.append("Transcript:\n" + c.transcript)
    return _trim("\n\n".join(p for p in parts if p))


def summary_line(run: RunResult) -> str:
    if run.status != "graded":
        return f"{run.lab}: not graded ({run.status}): {run.status_message}"
    failed = run.count("failed") + run.count("error")
    passed = len(run.checks) - failed
    return f"{run.lab}: {run.score:g}/{run.max_score:g} points, {passed} of {len(run.checks)} checks passed"


def to_gradescope(run: RunResult) -> dict[str, Any]:
    output = summary_line(run)
    if run.status_output:
        output += "\n\n" + _trim(run.status_output)
    return {
        "score": run.score,
        "execution_time": round(run.duration_s, 3),
        "output": output,
        "output_format": "text",
        "test_output_format": "text",
        "test_name_format": "text",
        "stdout_visibility": "hidden",
        "extra_data": {"lab": run.lab, "seed": run.seed, "status": run.status},
        "tests": [
            {
                "name": f"{c.id}: {c.title}",
                "number": str(i),
                "score": c.score,
                "max_score": c.points,
                "status": "passed" if c.outcome == "passed" else "failed",
                "output": _details(c),
                "tags": [c.category],
                "visibility": "after_published" if c.visibility == "hidden" else "visible",
                "extra_data": {"id": c.id, "outcome": c.outcome, "seed": c.seed},
            }
            for i, c in enumerate(run.checks, 1)
        ],
    }


def to_prairielearn(run: RunResult) -> dict[str, Any]:
    if run.status not in GRADABLE_STATUSES:
        return {
            "gradable": False,
            "format_errors": [run.status_message or run.status],
            "message": summary_line(run),
            "output": _trim(run.status_output),
        }
    return {
        "gradable": True,
        "score": (run.score / run.max_score) if run.max_score else 0.0,
        "message": summary_line(run),
        "output": _trim(run.status_output),
        "tests": [
            {
                "name": c.id,
                "description": c.title,
                "points": c.score,
                "max_points": c.points,
                "message": "passed" if c.outcome == "passed" else (c.message + (f"\nHint: {c.hint}" if c.hint else "")),
                "output": c.transcript,
            }
            for c in run.checks
        ],
    }


def schema(name: str) -> dict[str, Any]:
    """The JSON Schema ``gradescope`` or ``prairielearn``."""
    text = resources.files("grader.report").joinpath("schemas", f"{name}-results.schema.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def validate(name: str, data: Any) -> None:
    """Raise jsonschema.ValidationError when ``data`` is not a valid ``name`` results.json."""
    jsonschema.validate(data, schema(name), cls=jsonschema.Draft202012Validator)
