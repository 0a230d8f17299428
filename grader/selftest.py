"""``grader selftest``: prove that each spec catches what it claims.

The reference program of a lab must pass every check; every known-buggy fixture must fail exactly the checks
its ``expect.yaml`` names; every check must be failed by at least one fixture; and no verdict may change
between repeated runs. Prints a detection matrix (fixtures x checks) and exits non-zero on any mismatch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rich.console import Console

from grader import catalog
from grader.driver.limits import Limits
from grader.engine.runner import Options
from grader.errors import Location, SpecError, UsageError
from grader.isolation import Isolation, LocalIsolation
from grader.report.model import RunResult
from grader.spec.loader import load_spec
from grader.spec.model import Spec


@dataclass(frozen=True)
class Subject:
    """A program to grade: the reference (expects no failure) or a fixture (expects its list)."""

    name: str
    path: Path
    expected: frozenset[str]
    bug: str = ""


@dataclass
class Verdicts:
    subject: Subject
    runs: list[dict[str, str]] = field(default_factory=list)  # check id -> outcome, one dict per run
    statuses: list[str] = field(default_factory=list)

    def failing(self) -> set[str]:
        return {cid for run in self.runs for cid, out in run.items() if out != "passed"}

    def flips(self) -> set[str]:
        ids = {cid for run in self.runs for cid in run}
        return {cid for cid in ids if len({run.get(cid) for run in self.runs}) > 1}

    def errors(self) -> set[str]:
        return {cid for run in self.runs for cid, out in run.items() if out == "error"}

    def failing_sets(self) -> list[frozenset[str]]:
        """Which checks did not pass, run by run."""
        return [frozenset(cid for cid, out in run.items() if out != "passed") for run in self.runs]

    def flip_report(self) -> str:
        """'' when every run failed the same checks; else which checks each run failed, e.g.
        'run 1 fails a, b; run 2 fails a (flipped: b)'."""
        flips = sorted(self.flips())
        if not flips:
            return ""
        sets = self.failing_sets()
        if len(set(sets)) == 1:  # the same checks fail, but not the same way (failed / error)
            return "; ".join(f"{cid}: " + " ".join(run.get(cid, "?") for run in self.runs) for cid in flips)
        runs = "; ".join(f"run {i + 1} fails {', '.join(sorted(f)) or 'nothing'}" for i, f in enumerate(sets))
        return f"{runs} (flipped: {', '.join(flips)})"


def load_subjects(spec: Spec) -> list[Subject]:
    root = catalog.lab_root(spec.directory)
    ids = {c.id for c in spec.checks}
    subjects = [Subject("reference", root / "reference" / spec.lab, frozenset())]
    if not subjects[0].path.is_dir():
        raise UsageError(f"no reference program for {spec.lab} at {subjects[0].path}")
    for folder in sorted((root / "fixtures" / spec.lab).glob("*/")):
        expect = folder / "expect.yaml"
        if not expect.is_file():
            raise SpecError(Location(str(folder)), "fixture has no expect.yaml")
        try:
            data = yaml.safe_load(expect.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise SpecError(Location(str(expect)), f"invalid YAML: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("fails"), list) or not data["fails"]:
            raise SpecError(Location(str(expect)), "expected a mapping with a non-empty list 'fails'")
        unknown = sorted(set(map(str, data["fails"])) - ids)
        if unknown:
            raise SpecError(Location(str(expect)), f"fails: no check named {', '.join(unknown)} in {spec.lab}")
        subjects.append(Subject(folder.name, folder, frozenset(map(str, data["fails"])), str(data.get("bug", ""))))
    return subjects


def run_selftest(names: Sequence[str], *, repeat: int, jobs: int, console: Console,
                 isolation: Isolation | None = None, limits: Sequence[str] = ()) -> int:
    paths = [catalog.resolve(n) for n in names] if names else catalog.shipped()
    if not paths:
        raise UsageError("no specs to test")
    passed = failed = 0
    totals = Totals()
    for path in paths:
        spec = load_spec(path)
        grader = _grader(spec, isolation or LocalIsolation(), limits)
        if _selftest_spec(spec, max(1, repeat), max(1, jobs), console, grader, totals):
            passed += 1
        else:
            failed += 1
    colour = "green" if not failed else "red"
    console.print(totals.describe())
    # The last line alone says how it went, as CI reads it: "selftest: N passed, N failed".
    console.print(f"[bold {colour}]selftest: {passed} passed, {failed} failed[/]")
    return 0 if not failed else 1


Grader = Callable[[Path, int], RunResult]


def _grader(spec: Spec, isolation: Isolation, limits: Sequence[str]) -> Grader:
    """Grade a subject with this seed, where ``--backend`` says, under the limits ``--limit`` says."""
    chosen = Limits.parse(list(limits), spec.submission.limits) if limits else None

    def run(path: Path, seed: int) -> RunResult:
        return isolation.grade(spec, path, Options(seed=seed, limits=chosen))

    return run


@dataclass
class Totals:
    """Figures over every spec of a selftest: gradings, verdicts, and the programs and checks that flipped."""

    gradings: int = 0
    verdicts: int = 0
    flipped_programs: int = 0
    flipped_checks: int = 0

    def add(self, verdicts: Verdicts) -> None:
        self.gradings += len(verdicts.runs)
        self.verdicts += sum(len(run) for run in verdicts.runs)
        flips = verdicts.flips()
        self.flipped_programs += bool(flips)
        self.flipped_checks += len(flips)

    def describe(self) -> str:
        return (f"{self.gradings} gradings, {self.verdicts} verdicts; {self.flipped_checks} check verdict(s) "
                f"flipped in {self.flipped_programs} program(s)")


def _selftest_spec(spec: Spec, repeat: int, jobs: int, console: Console, grader: Grader,
                   totals: Totals | None = None) -> bool:
    subjects = load_subjects(spec)
    verdicts = {s.name: Verdicts(s) for s in subjects}
    tasks = [(s, i) for i in range(repeat) for s in subjects]

    def work(task: tuple[Subject, int]) -> tuple[str, dict[str, str], str]:
        subject, i = task
        result = grader(subject.path, 1000 + i)
        return subject.name, {c.id: c.outcome for c in result.checks}, result.status

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        for name, outcomes, status in pool.map(work, tasks):
            verdicts[name].runs.append(outcomes)
            verdicts[name].statuses.append(status)
    finally:  # on Ctrl-C or SIGTERM, the gradings not yet begun are dropped; those running end by their deadlines
        pool.shutdown(wait=True, cancel_futures=True)
    if totals is not None:
        for v in verdicts.values():
            totals.add(v)
    return _report(spec, subjects, verdicts, repeat, console)


def _cell(failed: bool, expected: bool, flipped: bool, errored: bool) -> str:
    if flipped:
        return "[yellow]~[/]"
    if errored:
        return "[magenta]E[/]"
    if failed and expected:
        return "[green]X[/]"
    if failed:
        return "[red]![/]"
    if expected:
        return "[red]-[/]"
    return "[dim].[/]"


def _report(spec: Spec, subjects: list[Subject], verdicts: dict[str, Verdicts], repeat: int,
            console: Console) -> bool:
    ids = [c.id for c in spec.checks]
    console.print(f"[bold]{spec.lab}[/]: {len(ids)} checks, {len(subjects) - 1} fixtures, {repeat} run(s) each")
    width = max(len(s.name) for s in subjects) + 2
    tens = "".join(str((i + 1) // 10) if (i + 1) >= 10 else " " for i in range(len(ids)))
    units = "".join(str((i + 1) % 10) for i in range(len(ids)))
    console.print(" " * width + tens, markup=False)
    console.print(" " * width + units, markup=False)
    for s in subjects:
        v = verdicts[s.name]
        cells = "".join(_cell(cid in v.failing(), cid in s.expected, cid in v.flips(), cid in v.errors())
                        for cid in ids)
        console.print(f"{s.name:<{width}}{cells}", markup=True, highlight=False)
    legend = "  ".join(f"{i + 1}={cid}" for i, cid in enumerate(ids))
    console.print(f"[dim]{legend}[/]")
    console.print("[dim]X caught as expected  . passed  ! failed but should pass  - should fail but passed  "
                  "~ flipped between runs  E harness error[/]")
    problems: list[str] = []
    for s in subjects:
        v = verdicts[s.name]
        if any(st != "graded" for st in v.statuses) and s.expected != set(ids):
            problems.append(f"{s.name}: the submission did not build or start ({', '.join(set(v.statuses))})")
        if v.flip_report():
            problems.append(f"{s.name}: verdicts changed between runs: {v.flip_report()}")
        if len(set(v.statuses)) > 1:
            problems.append(f"{s.name}: the grading status changed between runs: {' '.join(v.statuses)}")
        for cid in sorted(v.errors()):
            problems.append(f"{s.name}: {cid} ended in a harness error")
        extra = v.failing() - s.expected - v.flips()
        missing = s.expected - v.failing() - v.flips()
        if extra:
            problems.append(f"{s.name}: failed checks it should pass: {', '.join(sorted(extra))}")
        if missing:
            problems.append(f"{s.name}: passed checks it should fail: {', '.join(sorted(missing))}")
    proven = set().union(*(s.expected for s in subjects))
    unproven = [cid for cid in ids if cid not in proven]
    if unproven:
        problems.append(f"unproven checks (no fixture fails them): {', '.join(unproven)}")
    for p in problems:
        console.print(f"[red]✗[/] {p}")
    if not problems:
        console.print(f"[green]✓ {spec.lab}: reference passes all, every fixture fails exactly its checks, "
                      f"every check proven, no flips[/]")
    return not problems
