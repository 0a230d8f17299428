#!/usr/bin/env python3
"""Benchmark: a class of N submissions (a lab's reference and its fixtures, copied as students in turn) graded
with `grader grade` (local backend) at several --jobs settings; checks that every setting gives the same verdicts,
and the ones the fixtures' expect.yaml name (those of a serial run: `grader selftest`).

Usage: .venv/bin/python bench/bench_class.py [--lab http-server] [--students 30] [--jobs 1 2 4]
                                             [--out bench/results/class-LAB.json]

Writes the wall times, the verdict check and the machine's facts (CPU, cores, load, kernel, Python) as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader import catalog  # noqa: E402
from grader.batch.run import BatchOptions, BatchSummary, run_batch  # noqa: E402
from grader.report.model import RunResult  # noqa: E402


class Quiet:
    def start(self, total: int, skipped: int) -> None:
        pass

    def done(self, student: str, run: RunResult | None, error: str = "") -> None:
        pass

    def finish(self, summary: BatchSummary) -> None:
        pass


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average_at_start": os.getloadavg(),
            "kernel": platform.release(), "python": platform.python_version(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def make_class(lab: str, n: int, root: Path) -> None:
    sources = [catalog.LABS_DIR / "reference" / lab, *sorted((catalog.LABS_DIR / "fixtures" / lab).glob("*/"))]
    for i in range(n):
        src = sources[i % len(sources)]
        name = "reference" if src.parent.name == "reference" else src.name
        shutil.copytree(src, root / f"s{i:03d}-{name}", ignore=shutil.ignore_patterns("expect.yaml"))


def expectations(lab: str) -> dict[str, list[str]]:
    """What each source must fail: nothing for the reference, its expect.yaml's list for a fixture."""
    found = {"reference": []}
    for expect in (catalog.LABS_DIR / "fixtures" / lab).glob("*/expect.yaml"):
        found[expect.parent.name] = sorted(yaml.safe_load(expect.read_text(encoding="utf-8"))["fails"])
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--lab", default="http-server")
    p.add_argument("--students", type=int, default=30)
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    n = max(1, min(args.students, 500))
    facts = machine()
    runs: list[dict[str, Any]] = []
    verdicts: dict[int, dict[str, list[str]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-class-") as tmp:
        make_class(args.lab, n, Path(tmp) / "class")
        for jobs in args.jobs:
            out = Path(tmp) / f"out-{jobs}"
            t0 = time.perf_counter()
            summary = run_batch(BatchOptions(args.lab, Path(tmp) / "class", out, jobs=jobs, regrade=True, seed=1),
                                Quiet())
            wall = time.perf_counter() - t0
            verdicts[jobs] = {s: sorted(c.id for c in r.checks if c.outcome != "passed") for s, r in summary.results}
            runs.append({"jobs": jobs, "wall_s": round(wall, 2), "per_submission_s": round(wall / n, 3),
                         "graded": summary.graded, "harness_errors": len(summary.errors)})
            print(f"{args.lab}: {n} submissions at --jobs {jobs}: {wall:.1f}s ({wall / n:.2f}s each)", flush=True)
    expected = expectations(args.lab)
    unexpected = sorted({s for v in verdicts.values() for s, bad in v.items()
                         if bad != expected.get(s.split("-", 1)[1])})
    print("every verdict is the one the fixture's expect.yaml names" if not unexpected
          else f"verdicts other than expect.yaml names for: {unexpected}")
    first = verdicts[args.jobs[0]]
    differ = sorted({s for v in verdicts.values() for s in v if v.get(s) != first.get(s)})
    print("verdicts identical across --jobs settings" if not differ else f"verdicts differ for: {differ}")
    result = {"lab": args.lab, "students": n, "backend": "local", "machine": facts, "runs": runs,
              "verdicts_identical": not differ, "verdicts_as_expected": not unexpected,
              "unexpected": {s: {str(j): verdicts[j].get(s) for j in args.jobs} for s in unexpected},
              "load_average_at_end": os.getloadavg(),
              "differing_students": {s: {str(j): verdicts[j].get(s) for j in args.jobs} for s in differ}}
    out_path = args.out or ROOT / "bench" / "results" / f"class-{args.lab}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
