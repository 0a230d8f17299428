"""The JSON report: the same content as the JUnit file, for scripts and dashboards."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from grader.report.model import CheckResult, RunResult


def _feedback(c: CheckResult) -> dict[str, Any]:
    """The feedback on a failed check, present only when it was given."""
    out: dict[str, Any] = {}
    if c.differential is not None:
        out["differential"] = dataclasses.asdict(c.differential)
    if c.smallest is not None:
        out["smallest"] = dataclasses.asdict(c.smallest)
    if c.pcap:
        out["pcap"] = c.pcap
    return out


def to_dict(run: RunResult) -> dict[str, Any]:
    return {
        "lab": run.lab,
        "title": run.title,
        "submission": run.submission,
        "score": run.score,
        "max_score": run.max_score,
        "duration_s": round(run.duration_s, 3),
        "seed": run.seed,
        "status": run.status,
        "status_message": run.status_message,
        "status_output": run.status_output,
        "checks": [
            {
                "id": c.id,
                "title": c.title,
                "category": c.category,
                "points": c.points,
                "visibility": c.visibility,
                "outcome": c.outcome,
                "message": c.message,
                "hint": c.hint,
                "transcript": c.transcript,
                "duration_s": c.duration_s,
                "seed": c.seed,
                **_feedback(c),
                "events": [e.to_dict() for e in c.events],
            }
            for c in run.checks
        ],
    }


def to_json(run: RunResult) -> str:
    return json.dumps(to_dict(run), indent=2, ensure_ascii=False) + "\n"
