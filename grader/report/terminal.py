"""The terminal summary: a table of checks, each failure explained with its transcript and hint, the score."""

from __future__ import annotations

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from grader.report.model import RunResult

_STYLE = {"passed": ("PASS", "green"), "failed": ("FAIL", "red"), "error": ("ERROR", "magenta"),
          "skipped": ("SKIP", "yellow")}


def render(run: RunResult, console: Console, *, transcripts: bool = True) -> None:
    console.print(f"[bold]{escape(run.title)}[/] ([cyan]{escape(run.lab)}[/]) — {escape(run.submission)}")
    if run.status != "graded":
        what = "did not build" if run.status == "build-failed" else "did not start"
        console.print(Panel(Text(run.status_message + ("\n\n" + run.status_output.strip()[-2500:]
                                                       if run.status_output.strip() else "")),
                            title=f"[red]The submission {what}", border_style="red"))
    table = Table(show_lines=False, header_style="bold")
    table.add_column("", width=5)
    table.add_column("check")
    table.add_column("category", style="dim")
    table.add_column("pts", justify="right")
    table.add_column("result")
    for c in run.checks:
        label, colour = _STYLE[c.outcome]
        pts = f"{c.score:g}/{c.points:g}"
        first = c.message.splitlines()[0] if c.message else ""
        if len(first) > 90:
            first = first[:87] + "..."
        detail = escape(c.title) if c.outcome == "passed" else f"{escape(c.title)}: [{colour}]{escape(first)}[/]"
        table.add_row(f"[{colour}]{label}[/]", escape(c.id), c.category, pts, detail)
    console.print(table)
    for c in run.checks:
        if c.outcome in ("passed", "skipped") or run.status != "graded":
            continue
        label, colour = _STYLE[c.outcome]
        parts: list[Text] = [Text(c.message)]
        if c.hint:
            parts.append(Text.assemble(("Hint: ", "bold yellow"), c.hint))
        if transcripts and c.transcript:
            parts.append(Text.assemble(("What happened on the wire:\n", "bold"), (c.transcript, "dim")))
        if c.differential is not None and transcripts:
            head, _, rest = c.differential.text.partition("\n")
            body, _, last = rest.rpartition("\n")
            parts.append(Text.assemble((head + "\n", "bold"), (body + "\n", "dim"), (last, "cyan")))
        elif c.differential is not None:
            parts.append(Text.assemble(("Compared with the reference program: ", "bold"),
                                       (c.differential.summary, "cyan")))
        if c.smallest is not None:
            parts.append(Text.assemble(("Smallest failing case: ", "bold"), c.smallest.summary,
                                       (f" (replay: --only {c.id} --seed {run.seed})", "dim")))
        if c.pcap:
            parts.append(Text.assemble(("Packet capture: ", "bold"), c.pcap))
        console.print(Panel(Group(*parts), title=f"[{colour}]{label}[/] {escape(c.id)} — {escape(c.title)}",
                            title_align="left", border_style=colour))
    total = len(run.checks)
    passed = run.count("passed")
    colour = "green" if passed == total and run.status == "graded" else "red"
    console.print(
        f"[bold {colour}]Score {run.score:g}/{run.max_score:g}[/]  {passed}/{total} checks passed"
        + (f", {run.count('failed')} failed" if run.count("failed") else "")
        + (f", {run.count('error')} harness errors" if run.count("error") else "")
        + f"  ({run.duration_s:.2f}s, seed {run.seed})"
    )
