"""What ``run_autograder`` runs inside Gradescope: grade one submission, write Gradescope's results.json.

``python -m grader.batch.autograder --spec SPEC --submission DIR --results FILE [--student]``. It always
writes a results.json (a failure of the grader itself becomes a zero with the reason), so Gradescope shows
the student something.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import grader
from grader import catalog
from grader.batch.jobs import grade_submission
from grader.batch.store import atomic_write
from grader.engine.runner import Options
from grader.report.platforms import summary_line, to_gradescope
from grader.spec.loader import load_spec


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="run_autograder")
    p.add_argument("--spec", required=True)
    p.add_argument("--submission", type=Path, required=True)
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--student", action="store_true")
    args = p.parse_args(argv)
    print(f"socket-lab-grader from {Path(grader.__file__).resolve().parent}", flush=True)
    try:
        spec = load_spec(catalog.resolve(args.spec))
        run = grade_submission(spec, args.submission, Options(student=args.student))
        results = to_gradescope(run)
        print(summary_line(run), flush=True)
        code = 0
    except Exception as exc:
        traceback.print_exc()
        results = {"score": 0.0, "output": f"The autograder itself failed (not your fault): {exc}",
                   "output_format": "text", "tests": []}
        code = 1
    atomic_write(args.results, json.dumps(results, indent=2) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
