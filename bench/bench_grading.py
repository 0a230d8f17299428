#!/usr/bin/env python3
"""Benchmark: wall time of grading a lab's reference program with the shipped spec, beside the spec's floor.

Usage: .venv/bin/python bench/bench_grading.py [LAB ...] [--runs N] [--out bench/results/grading.json]

For each lab it grades reference/<lab> N times and prints the median and min wall time, the time to build and
start the submission, the slowest checks (where the time goes), and the spec's floor: the waits its checks
need by design (pauses, send delays between fragments, expect_open windows: a parallel group counted once)
plus one program start for each time the spec (re)starts the program (a new short-I/O setting, a fresh check,
a restart step, a client started by a check), each at the measured cost of one start and stop of the
reference. The ratio wall / floor is what the harness adds. Loopback only; bounded runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader import catalog  # noqa: E402
from grader.engine.runner import Options, grade  # noqa: E402
from grader.spec.loader import load_spec  # noqa: E402
from grader.spec.model import Spec, Step  # noqa: E402
from grader.steps.common import payload, split_points  # noqa: E402


def step_waits(steps: tuple[Step, ...], spec: Spec) -> float:
    """The seconds these steps wait by design, whatever the submission does."""
    total = 0.0
    for st in steps:
        a = st.args
        if st.kind == "pause":
            total += a.float("seconds")
        elif st.kind == "expect_open":
            total += a.float("for")
        elif st.kind == "send" and a.float("delay", 0.0) > 0:
            data = payload(a, spec.directory, random.Random(0)) or b""
            total += a.float("delay") * len(split_points(data, a.get("split", ())))
        if st.nested:
            total += step_waits(st.nested, spec)  # a parallel group's branches wait at the same time: once
    return total


def program_starts(spec: Spec) -> int:
    """How many times grading the spec starts a program: the server at each new short-I/O setting, fresh check
    or restart step, or a client started by a step."""
    starts, current = 0, "none"
    for check in spec.checks:
        kinds = [st.kind for st in check.steps]
        if "start" in kinds:
            starts += kinds.count("start")
            continue
        if spec.submission.ready and spec.submission.ready != ("none",):
            setting = repr(check.short_io)
            if setting != current or check.fresh:
                starts += 1
                current = setting
            starts += kinds.count("restart")
    return starts


def start_sample(spec: Spec, reference: Path, seed: int) -> float:
    """One measure of the cost of a start and stop of the reference: a grading of the spec's first check alone,
    less that check's own time. (For a client lab, whose every check starts the client, the shortest check of a
    whole grading.) Taken between the full gradings, so that both see the machine in the same state."""
    if not (spec.submission.ready and spec.submission.ready != ("none",)):
        result = grade(spec, reference, Options(seed=seed))
        return min(c.duration_s for c in result.checks)
    t0 = time.perf_counter()
    result = grade(spec, reference, Options(seed=seed, only=(spec.checks[0].id,)))
    return time.perf_counter() - t0 - result.checks[0].duration_s


def bench(lab: str, runs: int) -> dict[str, Any]:
    spec = load_spec(catalog.resolve(lab))
    reference = catalog.LABS_DIR / "reference" / lab
    walls: list[float] = []
    in_checks: list[float] = []
    costs: list[float] = []
    per_check: dict[str, list[float]] = {}
    for i in range(runs):
        t0 = time.perf_counter()
        result = grade(spec, reference, Options(seed=i))
        walls.append(time.perf_counter() - t0)
        costs.append(start_sample(spec, reference, i))
        bad = [c.id for c in result.checks if c.outcome != "passed"]
        if bad:
            raise SystemExit(f"{lab}: the reference failed {bad}; the benchmark needs a passing run")
        in_checks.append(sum(c.duration_s for c in result.checks))
        for c in result.checks:
            per_check.setdefault(c.id, []).append(c.duration_s)
    med = statistics.median(walls)
    checks_med = statistics.median(in_checks)
    waits = sum(step_waits(c.steps, spec) for c in spec.checks)
    starts = program_starts(spec)
    cost = statistics.median(costs)
    floor = waits + starts * cost
    print(f"{lab}: {len(spec.checks)} checks, {runs} runs: median {med:.3f}s, min {min(walls):.3f}s; "
          f"in checks {checks_med:.3f}s, outside checks (build, start, stop) {med - checks_med:.3f}s")
    print(f"  floor {floor:.2f}s = waits by design {waits:.2f}s + {starts} program starts x {cost:.3f}s; "
          f"wall / floor = {med / floor:.2f}")
    slow = sorted(per_check.items(), key=lambda kv: -statistics.median(kv[1]))[:5]
    print("  slowest checks: " + ", ".join(f"{k} {statistics.median(v):.3f}s" for k, v in slow))
    return {"lab": lab, "checks": len(spec.checks), "runs": runs, "median_s": round(med, 3),
            "min_s": round(min(walls), 3), "in_checks_s": round(checks_med, 3), "waits_by_design_s": round(waits, 3),
            "program_starts": starts, "start_cost_s": round(cost, 3), "floor_s": round(floor, 3),
            "wall_over_floor": round(med / floor, 2),
            "slowest": {k: round(statistics.median(v), 3) for k, v in slow}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("labs", nargs="*", default=["http-server"])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    load0 = os.getloadavg()
    rows = [bench(lab, max(1, min(args.runs, 50))) for lab in args.labs]
    if args.out:
        facts = {"cores": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
                 "load_average_at_start": load0, "load_average_at_end": os.getloadavg(),
                 "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": facts, "labs": rows}, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
