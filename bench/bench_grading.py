#!/usr/bin/env python3
"""Benchmark: wall time of grading a lab's reference program with the shipped spec.

Usage: .venv/bin/python bench/bench_grading.py [LAB ...] [--runs N]

For each lab it grades reference/<lab> N times and prints the median and min wall time, the time to build and
start the submission, and the slowest checks (where the time goes). Loopback only; bounded runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader import catalog  # noqa: E402
from grader.engine.runner import Options, grade  # noqa: E402
from grader.spec.loader import load_spec  # noqa: E402


def bench(lab: str, runs: int) -> None:
    spec = load_spec(catalog.resolve(lab))
    walls: list[float] = []
    in_checks: list[float] = []
    per_check: dict[str, list[float]] = {}
    for i in range(runs):
        t0 = time.perf_counter()
        result = grade(spec, catalog.LABS_DIR / "reference" / lab, Options(seed=i))
        walls.append(time.perf_counter() - t0)
        bad = [c.id for c in result.checks if c.outcome != "passed"]
        if bad:
            raise SystemExit(f"{lab}: the reference failed {bad}; the benchmark needs a passing run")
        in_checks.append(sum(c.duration_s for c in result.checks))
        for c in result.checks:
            per_check.setdefault(c.id, []).append(c.duration_s)
    med = statistics.median(walls)
    checks_med = statistics.median(in_checks)
    print(f"{lab}: {len(spec.checks)} checks, {runs} runs: median {med:.3f}s, min {min(walls):.3f}s; "
          f"in checks {checks_med:.3f}s, outside checks (build, start, stop) {med - checks_med:.3f}s")
    slow = sorted(per_check.items(), key=lambda kv: -statistics.median(kv[1]))[:5]
    print("  slowest checks: " + ", ".join(f"{k} {statistics.median(v):.3f}s" for k, v in slow))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("labs", nargs="*", default=["http-server"])
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    for lab in args.labs:
        bench(lab, max(1, min(args.runs, 50)))


if __name__ == "__main__":
    main()
