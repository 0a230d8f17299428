"""Progress of a batch: a rich progress bar on a terminal (done/total, students failing so far, ETA), plain
lines otherwise (CI logs, pipes)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from grader.batch.run import BatchSummary
from grader.report.model import RunResult


def _failing(run: RunResult | None) -> bool:
    return run is None or run.exit_code != 0


def _verdict(run: RunResult | None, error: str) -> str:
    if run is None:
        return f"harness error: {error}"
    if run.status != "graded":
        return f"not graded ({run.status}): {run.status_message}"
    bad = run.count("failed") + run.count("error")
    if not bad:
        return f"{run.score:g}/{run.max_score:g}, all checks passed"
    return f"{run.score:g}/{run.max_score:g}, {bad} check{'s' if bad > 1 else ''} failed"


class PlainReporter:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.total = self.finished = self.failing = self.skipped = 0
        self.t0 = time.monotonic()

    def start(self, total: int, skipped: int) -> None:
        self.total, self.finished, self.skipped = total, skipped, skipped
        self.t0 = time.monotonic()
        self.console.print(f"grading {total - skipped} of {total} submissions"
                           + (f" ({skipped} already graded, kept; --regrade grades them again)" if skipped else ""))

    def done(self, student: str, run: RunResult | None, error: str = "") -> None:
        self.finished += 1
        self.failing += _failing(run)
        width = len(str(self.total))
        graded = self.finished - self.skipped
        left = self.total - self.finished
        eta = f", ETA {(time.monotonic() - self.t0) / graded * left:.0f}s" if left and graded else ""
        self.console.print(f"[{self.finished:{width}}/{self.total}] {student}: {_verdict(run, error)} "
                           f"({self.failing} failing so far{eta})", markup=False, highlight=False, soft_wrap=True)

    def finish(self, summary: BatchSummary) -> None:
        failing = sum(1 for _, r in summary.results if r.exit_code != 0)
        self.console.print(f"done in {summary.seconds:.1f}s: {summary.graded} graded, {summary.skipped} kept, "
                           f"{failing} of {len(summary.results)} students with failed checks"
                           + (f", {len(summary.errors)} not graded (harness errors)" if summary.errors else ""))


class RichReporter(PlainReporter):
    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self.progress = Progress(
            TextColumn("grading"), BarColumn(), MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failing]} failing"), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, transient=False,
        )
        self.task: TaskID | None = None

    def start(self, total: int, skipped: int) -> None:
        self.total, self.finished = total, skipped
        if skipped:
            self.console.print(f"{skipped} already graded, kept (--regrade grades them again)")
        self.progress.start()
        self.task = self.progress.add_task("grading", total=total, completed=skipped, failing=0)

    def done(self, student: str, run: RunResult | None, error: str = "") -> None:
        self.finished += 1
        self.failing += _failing(run)
        if _failing(run):
            self.progress.console.print(f"  {student}: {_verdict(run, error)}", markup=False, highlight=False)
        if self.task is not None:
            self.progress.update(self.task, advance=1, failing=self.failing)

    def finish(self, summary: BatchSummary) -> None:
        self.progress.stop()
        super().finish(summary)


def reporter_for(console: Console) -> PlainReporter:
    return RichReporter(console) if console.is_terminal else PlainReporter(console)
