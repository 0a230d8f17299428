#!/usr/bin/env python3
"""Benchmark: what each backend adds to a grading (isolation set-up, build, start, tear-down), beside local.

Usage: .venv/bin/python bench/bench_backends.py [--lab LAB] [--runs N] [--backends local,sandbox,docker]

For each backend it grades the lab's reference N times twice over: with one check only (``listens-on-port``
style: the first check of the spec, so the time is almost all overhead: copying, building, starting and
stopping the submission and the isolation around it) and with the whole spec. It prints the median wall
time and the harness's CPU (this process and its children: for docker the container's CPU is not counted,
it runs under the engine; the sandbox's harness is reaped inside its namespace: only local's is shown). The
overhead of a backend is its one-check time minus local's. Loopback and
namespaces or containers made here only; bounded runs.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader import catalog, isolation  # noqa: E402
from grader.engine.runner import Options  # noqa: E402
from grader.spec.loader import load_spec  # noqa: E402


def cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(backend: str, lab: str, runs: int, only: tuple[str, ...]) -> tuple[float, float]:
    spec = load_spec(catalog.resolve(lab))
    where = isolation.get(backend)
    walls, cpus = [], []
    for i in range(runs):
        c0, t0 = cpu(), time.perf_counter()
        result = where.grade(spec, catalog.LABS_DIR / "reference" / lab, Options(seed=100 + i, only=only))
        walls.append(time.perf_counter() - t0)
        cpus.append(cpu() - c0)
        if result.exit_code != 0:
            raise SystemExit(f"{backend}: the reference failed: {[(c.id, c.message) for c in result.checks]}")
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--lab", default="tcp-echo-server")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--backends", default="local,sandbox,docker")
    args = p.parse_args()
    runs = max(1, min(args.runs, 50))
    spec = load_spec(catalog.resolve(args.lab))
    first = (spec.checks[0].id,)
    print(f"{platform.node()}: {platform.machine()}, Python {platform.python_version()}, {args.lab}, "
          f"{runs} runs each, median")
    print(f"| backend | one check ({first[0]}) | overhead over local | whole spec ({len(spec.checks)} checks) "
          f"| harness CPU, whole spec |")
    print("|---|---|---|---|---|")
    base = None
    for backend in args.backends.split(","):
        one, _ = measure(backend, args.lab, runs, first)
        whole, whole_cpu = measure(backend, args.lab, runs, ())
        base = one if base is None else base
        shown = f"{whole_cpu:.2f} s" if backend == "local" else "not seen (the harness runs isolated)"
        print(f"| {backend} | {one:.2f} s | {one - base:+.2f} s | {whole:.2f} s | {shown} |", flush=True)


if __name__ == "__main__":
    main()
