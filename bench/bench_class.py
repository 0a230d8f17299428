#!/usr/bin/env python3
"""Benchmark: a class of N submissions (a lab's reference and its fixtures, copied as students in turn) graded
with `grader grade` on each backend at several --jobs settings, and through Celery (a real redis-server on
loopback and real `grader worker` processes); checks that every run gives the same verdicts, and the ones the
fixtures' expect.yaml name (those of a serial run: `grader selftest`).

Usage: .venv/bin/python bench/bench_class.py [--lab http-server] [--students 100] [--jobs 1 2 4 8]
                                             [--backends local sandbox docker] [--celery-workers 2]
                                             [--celery-concurrency 4] [--out bench/results/class-LAB.json]

Writes the wall and CPU times, the verdict check and the machine's facts (CPU, cores, load, kernel, Python) as
JSON. sandbox and docker need root (and docker a built image: scripts/build-image).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
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
    found: dict[str, list[str]] = {"reference": []}
    for expect in (catalog.LABS_DIR / "fixtures" / lab).glob("*/expect.yaml"):
        found[expect.parent.name] = sorted(yaml.safe_load(expect.read_text(encoding="utf-8"))["fails"])
    return found


REDIS_SERVER = "/usr/bin/redis-server"


def _wait(predicate: Any, what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {seconds:.0f}s waiting for {what}")
        time.sleep(0.05)  # polling, bounded by the deadline


@contextlib.contextmanager
def celery_cluster(tmp: Path, workers: int, concurrency: int) -> Iterator[str]:
    """A redis-server on a loopback port picked now and ``workers`` `grader worker` processes; yields the broker
    URL, and stops them all."""
    import redis  # the benchmark's Celery part needs the project's Celery extra

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)

        def pong() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return server.poll() is not None

        _wait(pong, "redis-server", 10)
        if server.poll() is not None:
            raise SystemExit(f"redis-server could not start on port {port}")
        broker = f"redis://127.0.0.1:{port}/0"
        for i in range(workers):
            log = tmp / f"worker{i}.log"
            procs.append(subprocess.Popen([sys.executable, "-m", "grader", "worker", "--broker", broker,
                                           "--concurrency", str(concurrency)],
                                          stdout=log.open("w"), stderr=subprocess.STDOUT))
        for i, proc in enumerate(procs):
            log = tmp / f"worker{i}.log"
            _wait(lambda p=proc, f=log: p.poll() is not None or " ready." in f.read_text(), f"worker {i}", 60)
            if proc.poll() is not None:
                raise SystemExit(f"worker {i} ended: {log.read_text()[-2000:]}")
        yield broker
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        server.terminate()
        server.wait(10)


def machine_cpu() -> float:
    """CPU seconds the whole machine has spent busy (every process: the gradings, the Celery workers, dockerd
    and the containers, the sandboxes), from /proc/stat: the benchmark is meant to be the machine's only work."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def check_docker() -> None:
    """Stop before any run when the docker backend could grade nothing (no engine, a stale image)."""
    from grader.driver import dockerenv
    from grader.errors import GraderError

    try:
        dockerenv.open_image()
    except GraderError as exc:
        raise SystemExit(f"--backends docker: {exc}") from None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--lab", default="http-server")
    p.add_argument("--students", type=int, default=100)
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--backends", nargs="+", default=["local"], choices=["local", "sandbox", "docker"])
    p.add_argument("--celery-workers", type=int, default=0, help="also grade through Celery with this many workers")
    p.add_argument("--celery-concurrency", type=int, default=4, help="gradings at once in each Celery worker")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    n = max(1, min(args.students, 500))
    if "docker" in args.backends:
        check_docker()
    facts = machine()
    runs: list[dict[str, Any]] = []
    verdicts: dict[str, dict[str, list[str]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-class-") as tmp:
        make_class(args.lab, n, Path(tmp) / "class")
        settings: list[tuple[str, str, int]] = [(b, "local", j) for b in args.backends for j in args.jobs]
        if args.celery_workers:
            settings += [(b, "celery", args.celery_workers * args.celery_concurrency) for b in args.backends]
        for backend, executor, jobs in settings:
            label = f"{backend} {executor} --jobs {jobs}" if executor == "local" else (
                f"{backend} celery {args.celery_workers} workers x {args.celery_concurrency}")
            out = Path(tmp) / f"out-{backend}-{executor}-{jobs}"
            with contextlib.ExitStack() as stack:
                broker = None
                if executor == "celery":
                    broker = stack.enter_context(celery_cluster(Path(tmp), args.celery_workers,
                                                                args.celery_concurrency))
                cpu0, t0 = machine_cpu(), time.perf_counter()
                summary = run_batch(BatchOptions(args.lab, Path(tmp) / "class", out, jobs=jobs, regrade=True, seed=1,
                                                 backend=backend, executor=executor, broker=broker), Quiet())
                wall = time.perf_counter() - t0
                cpu = machine_cpu() - cpu0
            # (a student the harness could not grade has no verdicts: counted in harness_errors, not compared)
            verdicts[label] = {s: sorted(c.id for c in r.checks if c.outcome != "passed") for s, r in summary.results}
            runs.append({"backend": backend, "executor": executor, "jobs": jobs, "label": label,
                         "wall_s": round(wall, 2), "per_submission_s": round(wall / n, 3),
                         "machine_cpu_s": round(cpu, 1),
                         "graded": summary.graded, "harness_errors": len(summary.errors),
                         "errors": [list(e) for e in summary.errors[:5]]})
            print(f"{args.lab}: {n} submissions, {label}: {wall:.1f}s ({wall / n:.2f}s each, machine CPU {cpu:.0f}s "
                  f"= {cpu / n:.2f}s each), {len(summary.errors)} harness errors", flush=True)
    expected = expectations(args.lab)
    unexpected = sorted({s for v in verdicts.values() for s, bad in v.items()
                         if bad != expected.get(s.split("-", 1)[1])})
    print("every verdict is the one the fixture's expect.yaml names" if not unexpected
          else f"verdicts other than expect.yaml names for: {unexpected}")
    labels = list(verdicts)
    differ = sorted({s for v in verdicts.values() for s in v
                     if len({tuple(w[s]) for w in verdicts.values() if s in w}) > 1})
    print("verdicts identical across every run" if not differ else f"verdicts differ for: {differ}")
    result = {"lab": args.lab, "students": n, "machine": facts, "runs": runs,
              "verdicts_identical": not differ, "verdicts_as_expected": not unexpected,
              "unexpected": {s: {k: verdicts[k].get(s) for k in labels} for s in unexpected},
              "load_average_at_end": os.getloadavg(),
              "differing_students": {s: {k: verdicts[k].get(s) for k in labels} for s in differ}}
    out_path = args.out or ROOT / "bench" / "results" / f"class-{args.lab}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
