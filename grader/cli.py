"""The command line: grader check | validate | list | explain | schema | selftest | grade | gradescope | worker."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from grader import catalog, isolation
from grader.driver.limits import Limits
from grader.engine.feedback import CHECK_DEFAULTS, FeedbackOptions
from grader.engine.runner import Options
from grader.errors import GraderError, SpecError, UsageError
from grader.report.jsonout import to_json
from grader.report.junit import to_junit
from grader.report.model import CheckResult
from grader.report.terminal import render
from grader.spec.loader import load_spec
from grader.spec.schema import spec_schema

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SUBMISSION = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="grader", description="Grade socket-programming lab submissions against YAML specs.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    c = sub.add_parser("check", help="grade a submission")
    c.add_argument("spec", help="a spec file, or the name of a shipped spec (see: grader list)")
    c.add_argument("submission", type=Path, help="the submission's folder")
    c.add_argument("--run", help="the command that starts it (default: the spec's run template)")
    c.add_argument("--build", help="the build command (default: the spec's)")
    c.add_argument("--junit", type=Path, help="write a JUnit XML report here")
    c.add_argument("--json", type=Path, help="write a JSON report here")
    c.add_argument("--student", action="store_true", help="run only visible checks")
    c.add_argument("--only", nargs="+", default=[], metavar="ID", help="run only these checks")
    c.add_argument("--seed", type=int, help="fault-injection seed (to replay a verdict)")
    c.add_argument("--quiet", action="store_true", help="no terminal report")
    _grading_args(c)
    c.add_argument("--no-differential", action="store_true",
                   help="do not run failed checks against the reference program to show where they part")
    c.add_argument("--no-shrink", action="store_true",
                   help="do not look for the smallest fragmentation or short-I/O schedule that still fails")
    c.add_argument("--pcap", type=Path, metavar="DIR",
                   help="write a packet capture (pcap) of each failed check's traffic into DIR (needs tcpdump)")
    v = sub.add_parser("validate", help="validate spec files")
    v.add_argument("specs", nargs="+")
    sub.add_parser("list", help="list the shipped specs")
    e = sub.add_parser("explain", help="show a spec's checks, points and categories")
    e.add_argument("spec")
    e.add_argument("--student", action="store_true", help="hide hidden checks")
    sub.add_parser("schema", help="print the spec JSON Schema")
    sub.add_parser("docs", help="print the step reference (docs/steps.md)")
    s = sub.add_parser("selftest", help="prove the specs: grade the reference and every known-buggy fixture")
    s.add_argument("specs", nargs="*", help="specs to prove (default: all shipped)")
    s.add_argument("--repeat", type=int, default=1, help="grade everything this many times")
    s.add_argument("--jobs", type=int, default=2, help="gradings at once")
    _grading_args(s)
    from grader import serve as serve_command

    serve_command.add_arguments(sub.add_parser(
        "serve", help="run the reference HTTP, TCP echo, UDP echo and time servers (known-good peers)"))
    g = sub.add_parser("grade", help="grade a whole class: a folder of submission folders, or a zip of them")
    g.add_argument("spec", help="a spec file, or the name of a shipped spec")
    g.add_argument("submissions", type=Path, help="a folder with one subfolder per student, or a zip of them")
    g.add_argument("--out", type=Path, required=True, help="the output folder (per-student reports, gradebook)")
    g.add_argument("--jobs", type=int, default=2, help="submissions graded at once (default 2)")
    g.add_argument("--regrade", action="store_true", help="grade again students already graded in --out")
    g.add_argument("--student", action="store_true", help="run only visible checks")
    g.add_argument("--seed", type=int, help="fault-injection seed for every submission")
    g.add_argument("--executor", default="local", choices=["local", "celery"],
                   help="local processes (default), or tasks on a Celery queue graded by `grader worker`s")
    g.add_argument("--broker", help="with --executor celery: the Redis URL, e.g. redis://127.0.0.1:6379/0")
    w = sub.add_parser("worker", help="grade tasks from a Celery queue (for grader grade --executor celery)")
    w.add_argument("--broker", required=True, help="the Redis URL, e.g. redis://127.0.0.1:6379/0")
    w.add_argument("--concurrency", type=int, default=2, help="gradings at once in this worker (default 2)")
    w.add_argument("--loglevel", default="INFO")
    gs = sub.add_parser("gradescope", help="write a Gradescope autograder bundle (setup.sh, run_autograder)")
    gs.add_argument("spec", help="a spec file, or the name of a shipped spec")
    gs.add_argument("--out", type=Path, required=True, help="the zip to write, e.g. autograder.zip")
    gs.add_argument("--student", action="store_true", help="run only visible checks inside Gradescope")
    _grading_args(g)
    return p


def _grading_args(p: argparse.ArgumentParser) -> None:
    """The options of every command that grades: where the submission runs, and its limits."""
    p.add_argument("--backend", choices=tuple(isolation.ISOLATIONS), default="local",
                   help="where the submission runs: local (this machine, resource limits), sandbox (namespaces "
                        "of its own, bubblewrap, as root)")
    p.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                   help="change a resource limit (over the spec's): " + ", ".join(
                       f"{f.name} (default {f.default})" for f in dataclasses.fields(Limits)))


def _interrupt_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every ``finally`` runs: containers removed, processes killed."""
    if threading.current_thread() is threading.main_thread():
        def handler(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    _interrupt_on_sigterm()
    out = Console(highlight=False)
    if not out.is_terminal:  # piped or in CI: wide enough that the table stays readable
        out = Console(highlight=False, width=120)
    err = Console(stderr=True, highlight=False)
    try:
        args = build_parser().parse_args(argv)
        return _dispatch(args, out)
    except SpecError as exc:
        err.print(f"[red]spec error:[/] {exc}", markup=True, soft_wrap=True)
        return EXIT_USAGE
    except UsageError as exc:
        err.print(f"[red]usage error:[/] {exc}", soft_wrap=True)
        return EXIT_USAGE
    except GraderError as exc:
        err.print(f"[red]error:[/] {exc}", soft_wrap=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, out: Console) -> int:
    if args.command == "check":
        return _check(args, out)
    if args.command == "validate":
        for name in args.specs:
            spec = load_spec(catalog.resolve(name))
            out.print(f"{spec.path}: ok ({len(spec.checks)} checks, {spec.max_score:g} points)")
        return EXIT_OK
    if args.command == "list":
        paths = catalog.shipped()
        if not paths:
            raise UsageError(f"no specs to list: none found in {catalog.where()}")
        for path in paths:
            spec = load_spec(path)
            out.print(f"{spec.lab:18} {len(spec.checks):3} checks  {spec.title}")
        return EXIT_OK
    if args.command == "explain":
        return _explain(args, out)
    if args.command == "schema":
        sys.stdout.write(json.dumps(spec_schema(), indent=2) + "\n")
        return EXIT_OK
    if args.command == "docs":
        from grader.docgen import render as render_docs

        sys.stdout.write(render_docs())
        return EXIT_OK
    if args.command == "selftest":
        from grader.selftest import run_selftest

        return run_selftest(args.specs, repeat=args.repeat, jobs=args.jobs, console=out,
                            isolation=isolation.get(args.backend), limits=args.limit)
    if args.command == "serve":
        from grader import serve as serve_command

        return serve_command.serve(serve_command.options_from(args))
    if args.command == "grade":
        from grader.batch.progress import reporter_for
        from grader.batch.run import BatchOptions, run_batch

        options = BatchOptions(args.spec, args.submissions, args.out, jobs=args.jobs, regrade=args.regrade,
                               student_mode=args.student, seed=args.seed, executor=args.executor,
                               broker=args.broker, backend=args.backend,
                               limits=tuple(args.limit))
        return run_batch(options, reporter_for(out)).exit_code
    if args.command == "worker":
        from grader.batch.celery_exec import worker_main

        if args.concurrency < 1:
            raise UsageError(f"--concurrency must be at least 1, not {args.concurrency}")
        worker_main(args.broker, args.concurrency, args.loglevel)
        return EXIT_OK
    if args.command == "gradescope":
        from grader.batch.gradescope import write_bundle

        write_bundle(args.spec, args.out, student=args.student)
        out.print(f"wrote {args.out}: upload it as the assignment's autograder on Gradescope")
        return EXIT_OK
    raise UsageError(f"unknown command {args.command}")


def _check(args: argparse.Namespace, out: Console) -> int:
    spec = load_spec(catalog.resolve(args.spec))
    if args.pcap is not None:
        from grader.driver.capture import tcpdump

        try:
            tcpdump()
            args.pcap.mkdir(parents=True, exist_ok=True)
        except (GraderError, OSError) as exc:
            raise UsageError(f"--pcap {args.pcap}: {exc}") from None
    limits = Limits.parse(args.limit, spec.submission.limits) if args.limit else None
    feedback = FeedbackOptions(
        differential=CHECK_DEFAULTS.differential and not args.no_differential,
        shrink=CHECK_DEFAULTS.shrink and not args.no_shrink,
        pcap=args.pcap,
    )
    options = Options(run=args.run, build=args.build, student=args.student, only=tuple(args.only),
                      seed=args.seed, feedback=feedback, limits=limits)

    def progress(result: CheckResult) -> None:
        if not args.quiet and out.is_terminal:
            out.print(f"  {result.outcome:7} {result.id}", style="dim")

    result = isolation.get(args.backend).grade(spec, args.submission, options, progress)
    if args.junit:
        args.junit.write_text(to_junit(result), encoding="utf-8")
    if args.json:
        args.json.write_text(to_json(result), encoding="utf-8")
    if not args.quiet:
        render(result, out)
    return result.exit_code


def _explain(args: argparse.Namespace, out: Console) -> int:
    spec = load_spec(catalog.resolve(args.spec))
    out.print(f"[bold]{spec.title}[/] ({spec.lab}) — run: [cyan]{spec.submission.run}[/]")
    if spec.description:
        out.print(spec.description.strip())
    table = Table(header_style="bold")
    for col in ("check", "category", "pts", "visibility", "title"):
        table.add_column(col)
    checks = [c for c in spec.checks if not (args.student and c.visibility == "hidden")]
    for c in checks:
        table.add_row(c.id, c.category, f"{c.points:g}", c.visibility, c.title)
    out.print(table)
    by_cat: dict[str, float] = {}
    for c in checks:
        by_cat[c.category] = by_cat.get(c.category, 0) + c.points
    out.print("Points by category: " + ", ".join(f"{k} {v:g}" for k, v in sorted(by_cat.items())))
    out.print(f"{len(checks)} checks, {sum(c.points for c in checks):g} points")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
